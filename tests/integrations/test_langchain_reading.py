"""The LangChain handler reads what LangChain hands it exactly as it did
before its per-event work was cut (revision 563f412): the request's output
bound, and from an ``LLMResult`` the usage, finish reasons, response id and
model, for any shape of ``usage_metadata``, ``response_metadata`` and
``generation_info`` (hypothesis, real ``langchain_core`` objects). The
``_reference_*`` functions are the old code, kept here as the standard."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult

from steptrace.integrations import langchain as st_langchain
from steptrace.llm.conclusion import TokenCounts
from steptrace.llm.counts import part_count

# -- the reference: the handler's reading at 563f412 ---------------------------------

_WRITES_5M, _WRITES_1H = "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"


def _reference_max_output(params: dict[str, Any], metadata: dict[str, Any]) -> int:
    for value in (
        params.get("max_completion_tokens"),
        params.get("max_tokens"),
        metadata.get("ls_max_tokens"),
    ):
        if type(value) is int and value > 0:
            return value
    return st_langchain.DEFAULT_MAX_OUTPUT_TOKENS


def _reference_usage_of(message: Any, llm_output: Any) -> TokenCounts | None:
    metadata = getattr(message, "usage_metadata", None)
    if isinstance(metadata, dict) and type(metadata.get("input_tokens")) is int:
        input_tokens = metadata["input_tokens"]
        output_tokens = metadata.get("output_tokens")
        output_tokens = output_tokens if type(output_tokens) is int else 0
        details = metadata.get("input_token_details")
        details = details if isinstance(details, dict) else {}
        cache_read = part_count(details.get("cache_read"), input_tokens)
        writes = details.get("cache_creation")
        if _WRITES_5M in details or _WRITES_1H in details:
            writes = (
                part_count(writes, input_tokens)
                + part_count(details.get(_WRITES_5M), input_tokens)
                + part_count(details.get(_WRITES_1H), input_tokens)
            )
        output_details = metadata.get("output_token_details")
        reasoning = output_details.get("reasoning") if isinstance(output_details, dict) else None
        return TokenCounts(
            input_tokens,
            output_tokens,
            cache_read,
            part_count(writes, input_tokens - cache_read),
            part_count(reasoning, output_tokens),
        )
    usage = llm_output.get("token_usage") if isinstance(llm_output, dict) else None
    if isinstance(usage, dict) and type(usage.get("prompt_tokens")) is int:
        output_tokens = usage.get("completion_tokens")
        output_tokens = output_tokens if type(output_tokens) is int else 0
        details = usage.get("completion_tokens_details")
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        return TokenCounts(
            usage["prompt_tokens"],
            output_tokens,
            reasoning_tokens=part_count(reasoning, output_tokens),
        )
    return None


def _reference_finish(response: Any) -> dict[str, Any]:
    """What the old ``_finish`` passed to ``ModelRequest.finish``."""
    generations = [g for prompt in getattr(response, "generations", None) or () for g in prompt]
    message = getattr(generations[0], "message", None) if generations else None
    usage = _reference_usage_of(message, getattr(response, "llm_output", None))
    info = getattr(message, "response_metadata", None) or {}
    output_chars = 0
    if usage is None:
        for generation in generations:
            output_chars += len(getattr(generation, "text", "") or "")
            output_chars += st_langchain._tool_call_chars(
                getattr(getattr(generation, "message", None), "tool_calls", None)
            )
    reasons = [
        str((getattr(g, "generation_info", None) or {}).get("finish_reason") or "")
        or str(info.get("stop_reason") or info.get("finish_reason") or "unknown")
        for g in generations
    ]
    response_id = info.get("id") or getattr(message, "id", None)
    return {
        "usage": usage,
        "response_id": response_id if isinstance(response_id, str) else None,
        "response_model": info.get("model_name") or info.get("model"),
        "finish_reasons": reasons,
        "output_chars": output_chars,
        "error": None,
    }


class _Told:
    """Stands where the ``ModelRequest`` is: keeps what ``_finish`` tells it."""

    def __init__(self) -> None:
        self.told: dict[str, Any] = {}

    def finish(self, usage: TokenCounts | None, **kwargs: Any) -> None:
        self.told = {"usage": usage, **kwargs}


# -- the shapes ----------------------------------------------------------------------

_COUNT = st.one_of(
    st.none(),
    st.just(0),
    st.integers(min_value=-5, max_value=40),
    st.integers(min_value=1, max_value=40),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-5, max_value=100),
    st.text(max_size=3),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
_WORD = st.one_of(st.none(), st.just(""), st.sampled_from(["stop", "length", "end_turn"]))
_REASON = st.one_of(_WORD, st.integers(min_value=-1, max_value=3), st.booleans())


def _or_not_a_dict(shape: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """``shape`` half the time, else anything a hostile server could send
    (``one_of`` would flatten the choice to one branch in eight)."""
    return st.booleans().flatmap(lambda a_dict: shape if a_dict else _COUNT)


_USAGE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"input_tokens": st.integers(min_value=-5, max_value=40)},
        optional={
            "output_tokens": _COUNT,
            "total_tokens": st.integers(min_value=0, max_value=10**6),
            "input_token_details": _or_not_a_dict(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "audio": _COUNT,
                        "cache_read": _COUNT,
                        "cache_creation": _COUNT,
                        _WRITES_5M: _COUNT,
                        _WRITES_1H: _COUNT,
                    },
                ),
            ),
            "output_token_details": _or_not_a_dict(
                st.fixed_dictionaries({}, optional={"audio": _COUNT, "reasoning": _COUNT})
            ),
        },
    ),
)
_LLM_OUTPUT = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "token_usage": _or_not_a_dict(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "prompt_tokens": _COUNT,
                        "completion_tokens": _COUNT,
                        "completion_tokens_details": _or_not_a_dict(
                            st.fixed_dictionaries({}, optional={"reasoning_tokens": _COUNT})
                        ),
                    },
                ),
            )
        },
    ),
)
_RESPONSE_METADATA = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.none(), st.just(""), st.just("chatcmpl-1"), st.integers()),
        "model_name": _WORD,
        "model": _WORD,
        "finish_reason": _REASON,
        "stop_reason": _REASON,
    },
)


@st.composite
def _generation(draw: st.DrawFn) -> Generation:
    info = draw(
        st.one_of(st.none(), st.fixed_dictionaries({}, optional={"finish_reason": _REASON}))
    )
    if draw(st.booleans()):
        return Generation(text=draw(st.text(max_size=8)), generation_info=info)
    usage = draw(_USAGE)
    message = AIMessage(
        content=draw(st.text(max_size=8)),
        id=draw(st.one_of(st.none(), st.just("run-1"))),
        response_metadata=draw(_RESPONSE_METADATA),
        tool_calls=draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["lookup", "add"]),
                        "args": st.just({"q": "x"}),
                        "id": st.one_of(st.none(), st.just("call_1")),
                    }
                ),
                max_size=2,
            )
        ),
    )
    # usage_metadata is set after validation: a hostile server's parts are
    # passed on unchecked, which the handler must read all the same.
    message.usage_metadata = usage
    return ChatGeneration(message=message, generation_info=info)


_RESULT = st.builds(
    LLMResult,
    generations=st.lists(st.lists(_generation(), min_size=0, max_size=3), max_size=3),
    llm_output=_LLM_OUTPUT,
)


@given(response=_RESULT)
def test_a_result_is_read_as_before(response: LLMResult) -> None:
    told = _Told()
    st_langchain._finish(told, response)  # type: ignore[arg-type]
    before = _reference_finish(response)
    assert told.told == before
    assert [type(r) for r in told.told["finish_reasons"]] == [str] * len(before["finish_reasons"])


@given(response=_RESULT)
def test_usage_is_read_as_before(response: LLMResult) -> None:
    for prompt in response.generations:
        for generation in prompt:
            message = getattr(generation, "message", None)
            counts = st_langchain._usage_of(message, response.llm_output)
            before = _reference_usage_of(message, response.llm_output)
            assert counts == before
            assert type(counts) is type(before)
            assert counts is None or all(type(c) is int for c in counts)


@given(
    params=st.fixed_dictionaries(
        {}, optional={"max_completion_tokens": _COUNT, "max_tokens": _COUNT}
    ),
    metadata=st.fixed_dictionaries({}, optional={"ls_max_tokens": _COUNT}),
)
def test_the_output_bound_is_read_as_before(
    params: dict[str, Any], metadata: dict[str, Any]
) -> None:
    assert st_langchain._max_output(params, metadata) == _reference_max_output(params, metadata)


@settings(max_examples=500)
@given(usage=_USAGE, llm_output=_LLM_OUTPUT)
def test_any_usage_metadata_is_read_as_before(usage: Any, llm_output: Any) -> None:
    message = SimpleNamespace(usage_metadata=usage)
    counts = st_langchain._usage_of(message, llm_output)
    before = _reference_usage_of(message, llm_output)
    assert counts == before
    assert type(counts) is type(before)
