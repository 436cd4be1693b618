"""The LLM layer as each test of ``tests/agent`` and ``tests/llm`` starts it (their
conftests import the fixture from here, so it is written once): unconfigured,
with no API keys in the environment and retries that do not sleep; and a test
that leaks a socket fails itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from steptrace import llm
from steptrace.llm._config import reset_configuration

from ._garbage import collect_test_garbage


@pytest.fixture(autouse=True)
def fresh_llm_configuration(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    reset_configuration()
    llm.configure(retry=llm.RetryPolicy(max_retries=2, base_delay_s=0.0))
    yield
    reset_configuration()
    # An SDK client left unclosed leaks its socket; collect now so the
    # ResourceWarning fails the test that leaked it, not a later one.
    collect_test_garbage()
