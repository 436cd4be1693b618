"""output_schema: validation, the nudge, SchemaRetry events, and final failure."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

import steptrace
from steptrace import SchemaRetry
from steptrace.llm import LlmRequest, SchemaValidationFailed, llm_call
from steptrace.testing import ScriptedProvider


class City(pydantic.BaseModel):
    name: str
    population: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Pair(TypedDict):
    left: str
    right: str


def test_invalid_answers_are_re_prompted_with_their_errors_until_valid() -> None:
    provider = ScriptedProvider(
        [
            "Sure! Here it is: Paris",
            '{"name": "Paris", "population": "lots"}',
            '```json\n{"name": "Paris", "population": 2102650}\n```',
        ]
    )

    @steptrace.step(model="m")
    def extract() -> City:
        result = llm_call("Describe Paris", provider=provider, output_schema=City)
        assert result.attempts == 3
        assert isinstance(result.data, City)
        return result.data

    with steptrace.run() as run:
        city = extract()
    assert city == City(name="Paris", population=2102650)
    retries = [e for e in run.events if isinstance(e, SchemaRetry)]
    assert [r.attempt for r in retries] == [1, 2]
    assert all(r.nudge_used for r in retries)
    assert retries[0].errors[0].startswith("(root): not valid JSON")
    assert retries[1].errors == (
        "population: Input should be a valid integer, unable to parse string as an integer",
    )
    row = run.completed_steps[0]
    assert row.llm_calls == 3  # every attempt is paid for
    assert row.input_tokens == sum(e.input_tokens for e in run.events if hasattr(e, "input_tokens"))
    second = provider.requests[1].messages
    assert [m.role for m in second[-2:]] == ["assistant", "user"]
    assert second[-2].content == "Sure! Here it is: Paris"
    assert "not valid JSON" in second[-1].content
    assert '"population"' in second[-1].content  # the schema is shown again
    assert provider.requests[0].response_schema is not None
    assert provider.requests[0].response_schema["name"] == "City"


def test_the_last_failure_raises_with_every_attempts_errors_and_the_raw_text() -> None:
    provider = ScriptedProvider(["nope", "[]", '{"x": 1}'])
    with pytest.raises(SchemaValidationFailed) as caught:
        llm_call("p", model="m", provider=provider, output_schema=Point, schema_retries=2)
    error = caught.value
    assert len(error.errors) == 3
    assert error.raw_text == '{"x": 1}'
    assert error.errors[2] == ["y: Field required"]
    assert "3 attempt(s)" in str(error)


def test_no_retries_means_one_attempt() -> None:
    provider = ScriptedProvider(["nope"])
    with pytest.raises(SchemaValidationFailed):
        llm_call("p", model="m", provider=provider, output_schema=Point, schema_retries=0)
    assert len(provider.requests) == 1


def test_typeddict_and_json_schema_dicts_validate_too() -> None:
    provider = ScriptedProvider(['{"left": "a", "right": "b"}', '{"n": 5}', '{"n": 3}'])
    pair = llm_call("p", model="m", provider=provider, output_schema=Pair)
    assert pair.data == {"left": "a", "right": "b"}
    schema = {
        "title": "Count",
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 4}},
        "required": ["n"],
    }
    count = llm_call("p", model="m", provider=provider, output_schema=schema)
    assert count.data == {"n": 3}
    assert count.attempts == 2


def test_a_bad_schema_is_the_callers_error_before_any_request() -> None:
    provider = ScriptedProvider(["{}"])
    with pytest.raises(TypeError, match="output_schema"):
        llm_call("p", model="m", provider=provider, output_schema=int)
    with pytest.raises(Exception, match="is not valid"):
        llm_call("p", model="m", provider=provider, output_schema={"type": "nonsense"})
    assert provider.requests == []


def test_a_tool_call_answer_is_not_validated_against_the_schema() -> None:
    from steptrace.llm import ToolCall

    call = ToolCall(id="1", name="lookup", arguments={})

    def answer(request: LlmRequest) -> list[ToolCall]:
        return [call]

    result = llm_call("p", model="m", provider=ScriptedProvider(answer), output_schema=Point)
    assert result.tool_calls == (call,)
    assert result.data is None
