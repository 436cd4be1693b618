"""LLM-layer tests start unconfigured, with no API keys in the environment and
retries that do not sleep."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from steptrace import llm
from steptrace.llm._config import reset_configuration


@pytest.fixture(autouse=True)
def fresh_llm_configuration(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    reset_configuration()
    llm.configure(retry=llm.RetryPolicy(max_retries=2, base_delay_s=0.0))
    yield
    reset_configuration()
