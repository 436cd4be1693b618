"""The LiteLLM integration reads a response's usage exactly as it did before
its per-request work was cut (revision 563f412), for any shape a server could
send (hypothesis). ``_reference_usage`` is the old code, kept as the standard."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from steptrace.integrations import litellm as st_litellm
from steptrace.llm.conclusion import TokenCounts
from steptrace.llm.counts import part_count

_field = st_litellm._field


def _reference_usage(usage: Any) -> TokenCounts | None:
    if usage is None:
        return None
    input_tokens = _field(usage, "prompt_tokens")
    output_tokens = _field(usage, "completion_tokens")
    if type(input_tokens) is not int or type(output_tokens) is not int:
        return None
    details = _field(usage, "prompt_tokens_details")
    cache_read = part_count(_field(details, "cached_tokens"), input_tokens)
    cache_write = part_count(_field(details, "cache_write_tokens"), input_tokens - cache_read)
    reasoning = _field(_field(usage, "completion_tokens_details"), "reasoning_tokens")
    return TokenCounts(
        input_tokens, output_tokens, cache_read, cache_write, part_count(reasoning, output_tokens)
    )


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


def _namespace(value: Any) -> Any:
    """A usage dict as the attribute object LiteLLM hands over."""
    if isinstance(value, dict):
        return SimpleNamespace(**{key: _namespace(item) for key, item in value.items()})
    return value


def _details(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(fields), st.fixed_dictionaries({}, optional=fields), _PART
    )


_USAGE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"prompt_tokens": _PART, "completion_tokens": _PART},
        optional={
            "prompt_tokens_details": _details(
                {"cached_tokens": _PART, "cache_write_tokens": _PART}
            ),
            "completion_tokens_details": _details({"reasoning_tokens": _PART}),
        },
    ),
)


@settings(max_examples=500)
@given(usage=_USAGE)
def test_usage_is_read_as_before(usage: Any) -> None:
    usage = _namespace(usage)
    counts = st_litellm._usage(usage)
    before = _reference_usage(usage)
    assert counts == before
    assert type(counts) is type(before)
