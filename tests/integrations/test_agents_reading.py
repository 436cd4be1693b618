"""The OpenAI Agents SDK and Pydantic AI integrations read a response's usage,
and name the model a request is priced under, exactly as they did before
their per-request work was cut (revision 563f412), for any shape a server
could send (hypothesis). The ``_reference_*`` functions are the old code,
kept here as the standard."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from steptrace.integrations import _agents_common, _agents_models
from steptrace.integrations import pydantic_ai as st_pydantic_ai
from steptrace.llm.conclusion import TokenCounts
from steptrace.llm.counts import part_count

# -- the reference: the readings at 563f412 ------------------------------------------


def _reference_agents_usage(usage: Any) -> TokenCounts | None:
    if usage is None:
        return None
    input_details = getattr(usage, "input_tokens_details", None)
    output_details = getattr(usage, "output_tokens_details", None)
    input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
    cache_read = part_count(getattr(input_details, "cached_tokens", None), input_tokens)
    cache_write = part_count(
        getattr(input_details, "cache_write_tokens", None), input_tokens - cache_read
    )
    reasoning = part_count(getattr(output_details, "reasoning_tokens", None), output_tokens)
    return TokenCounts(input_tokens, output_tokens, cache_read, cache_write, reasoning)


def _reference_pydantic_usage(usage: Any) -> TokenCounts | None:
    if usage is None or not (usage.input_tokens or usage.output_tokens):
        return None
    input_tokens = int(usage.input_tokens or 0)
    output_tokens = int(usage.output_tokens or 0)
    reasoning = getattr(usage, "output_reasoning_tokens", None)
    if type(reasoning) is not int or reasoning <= 0:
        details = getattr(usage, "details", None)
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    cache_read = part_count(getattr(usage, "cache_read_tokens", None), input_tokens)
    cache_write = part_count(getattr(usage, "cache_write_tokens", None), input_tokens - cache_read)
    return TokenCounts(
        input_tokens, output_tokens, cache_read, cache_write, part_count(reasoning, output_tokens)
    )


def _reference_price_name(model: str) -> str:
    for prefix in ("litellm/", "any-llm/"):
        if model.startswith(prefix):
            model = model[len(prefix) :]
            break
    provider, slash, rest = model.partition("/")
    if slash and provider and rest and ":" not in provider:
        return f"{provider}:{rest}"
    return model


# -- the shapes ----------------------------------------------------------------------

_TOTAL = st.one_of(st.none(), st.integers(min_value=0, max_value=40))
_PART = st.one_of(
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=-5, max_value=40),
    st.none(),
    st.just(0),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-5, max_value=100),
    st.text(max_size=3),
    st.booleans(),
)


def _object(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object with some of ``fields`` as attributes (the SDKs' usage types
    are read with getattr), or None."""
    return st.one_of(
        st.fixed_dictionaries(fields).map(lambda d: SimpleNamespace(**d)),
        st.fixed_dictionaries({}, optional=fields).map(lambda d: SimpleNamespace(**d)),
        st.none(),
    )


_AGENTS_USAGE = _object(
    input_tokens=_TOTAL,
    output_tokens=_TOTAL,
    input_tokens_details=_object(cached_tokens=_PART, cache_write_tokens=_PART),
    output_tokens_details=_object(reasoning_tokens=_PART),
)
_PYDANTIC_USAGE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "input_tokens": _TOTAL,
            "output_tokens": _TOTAL,
            "cache_read_tokens": _PART,
            "cache_write_tokens": _PART,
        },
        optional={
            "output_reasoning_tokens": _PART,
            "details": st.one_of(
                st.fixed_dictionaries({}, optional={"reasoning_tokens": _PART}), _PART
            ),
        },
    ).map(lambda d: SimpleNamespace(**d)),
)


@settings(max_examples=500)
@given(usage=_AGENTS_USAGE)
def test_agents_sdk_usage_is_read_as_before(usage: Any) -> None:
    counts = _agents_models._usage(usage)
    before = _reference_agents_usage(usage)
    assert counts == before
    assert type(counts) is type(before)


@settings(max_examples=500)
@given(usage=_PYDANTIC_USAGE)
def test_pydantic_ai_usage_is_read_as_before(usage: Any) -> None:
    counts = st_pydantic_ai._usage(usage)
    before = _reference_pydantic_usage(usage)
    assert counts == before
    assert type(counts) is type(before)


@given(
    model=st.one_of(
        st.text(alphabet="ab/:-", max_size=8),
        st.tuples(
            st.sampled_from(["", "litellm/", "any-llm/"]),
            st.sampled_from(["", "openai/", "anthropic:", "a/b/"]),
            st.sampled_from(["gpt-4o-mini", "", "x:y"]),
        ).map("".join),
    )
)
def test_a_model_is_priced_under_the_name_it_was_before(model: str) -> None:
    assert _agents_common.price_name(model) == _reference_price_name(model)
    assert _agents_common.price_name(model) == _reference_price_name(model)  # remembered
