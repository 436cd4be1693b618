"""Export tests start with the LLM layer unconfigured (no API keys, retries
that do not sleep), flat prices, and, when they ask for ``otel``, a fresh
OpenTelemetry tracer provider recording into memory (the global provider is
never touched)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import steptrace
from steptrace import llm
from steptrace.llm._config import reset_configuration
from steptrace.testing import FakePrices

from .helpers import Otel


@pytest.fixture(autouse=True)
def fresh_llm_configuration(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    reset_configuration()
    llm.configure(retry=llm.RetryPolicy(max_retries=2, base_delay_s=0.0))
    steptrace.configure(price_source=FakePrices(output_per_million=2.0))
    yield
    reset_configuration()


@pytest.fixture
def otel() -> Iterator[Otel]:
    """An ``OpenTelemetryExporter`` registered with steptrace, on its own provider."""
    recorder = Otel()
    steptrace.add_span_processor(recorder.exporter)
    try:
        yield recorder
    finally:
        steptrace.remove_span_processor(recorder.exporter)
        recorder.provider.shutdown()
    assert recorder.exporter.failures == 0
