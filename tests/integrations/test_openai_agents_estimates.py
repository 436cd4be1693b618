"""The shared helpers of the agent-framework integrations, on generated inputs:
the pre-flight estimate counts every character of text a request carries, and
a provider prefix is priced as the model it names."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("agents", reason="needs the extra: pip install 'steptrace[openai-agents]'")

from hypothesis import assume, given
from hypothesis import strategies as st

from steptrace.integrations._agents_common import estimate_chars, estimate_tokens, price_name

texts = st.text(max_size=40)
requests: st.SearchStrategy[Any] = st.recursive(
    texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(text_length(item) for item in value.values())
    return sum(text_length(item) for item in value)


@given(requests)
def test_the_estimate_counts_every_character_of_text(request: Any) -> None:
    assert estimate_chars(request) == text_length(request)


@given(st.integers(0, 10**6), st.integers(0, 1000))
def test_the_token_estimate_errs_high_for_text(chars: int, items: int) -> None:
    # ~4 characters a token in practice; the estimate assumes 3, plus 4 an item.
    assert estimate_tokens(chars, items) >= chars / 3 + 4 * items


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=20)


@given(names, names)
def test_a_slash_prefix_becomes_the_provider_prefix(provider: str, model: str) -> None:
    assume(provider not in ("litellm", "any-llm"))  # routing prefixes, dropped
    assert price_name(f"{provider}/{model}") == f"{provider}:{model}"
    assert price_name(f"litellm/{provider}/{model}") == f"{provider}:{model}"


@given(names)
def test_a_plain_or_colon_name_is_kept(model: str) -> None:
    assert price_name(model) == model
    assert price_name(f"openai:{model}") == f"openai:{model}"
