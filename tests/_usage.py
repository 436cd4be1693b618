"""Usage a hostile or broken OpenAI-compatible server reports, for the tests
that feed it to every path reading OpenAI usage (the instrumented SDK, the
Agents SDK, Pydantic AI, LangChain): 100 prompt and 40 completion tokens,
with whatever reasoning and cached parts the test names."""

from __future__ import annotations

from typing import Any


def hostile_openai_usage(reasoning: Any, cached: Any = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
