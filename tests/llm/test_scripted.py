"""The scripted provider's one reply type, and its schema answers: a request for
an ``output_schema`` answered with a valid instance built from the schema."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

import steptrace
import steptrace.llm.providers.scripted as scripted
from steptrace.llm import ToolCall, llm_call
from steptrace.llm._schema import OutputSchema
from steptrace.llm.providers._schema_instance import schema_instance
from steptrace.testing import Reply, ScriptedProvider


def test_testing_reply_is_the_scripted_providers_reply() -> None:
    assert Reply is scripted.Reply
    assert steptrace.testing.Reply is Reply


def test_a_reply_carries_text_tool_calls_and_the_usage_to_report() -> None:
    call = ToolCall(id="c1", name="search", arguments={"q": "paris"})
    provider = ScriptedProvider(
        [
            Reply(tool_calls=[call]),
            Reply("Paris.", input_tokens=1000, output_tokens=7, finish_reason="length"),
            Reply.json({"city": "Paris"}),
        ]
    )
    first = llm_call("where?", model="m", provider=provider)
    assert first.tool_calls == (call,)
    second = llm_call("where?", model="m", provider=provider)
    assert (second.text, second.input_tokens, second.output_tokens) == ("Paris.", 1000, 7)
    assert llm_call("where?", model="m", provider=provider).text == '{"city": "Paris"}'


def test_a_reply_of_an_unknown_kind_is_refused_with_what_is_accepted() -> None:
    provider = ScriptedProvider([{"text": "hi"}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"a reply must be a Reply, a string"):
        llm_call("p", model="m", provider=provider)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    street: str = pydantic.Field(min_length=5)
    number: int = pydantic.Field(gt=10, le=20)


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=18)
    colour: Colour
    kind: Literal["customer", "staff"]
    address: Address
    others: list[Address] = pydantic.Field(min_length=2)
    nickname: str | None
    score: float = pydantic.Field(gt=0.5, lt=1.0)


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize("schema", [Person, Point])
def test_schema_answers_give_a_valid_instance_without_a_script(schema: type) -> None:
    provider = ScriptedProvider(schema_answers=True)
    result = llm_call("describe", model="m", provider=provider, output_schema=schema)
    assert isinstance(result.data, schema)
    assert result.attempts == 1
    assert result.output_tokens > 0


def test_schema_answers_follow_the_script_first_and_plain_requests_still_run_out() -> None:
    call = ToolCall(id="c1", name="lookup", arguments={})
    provider = ScriptedProvider([Reply(tool_calls=[call])], schema_answers=True)
    first = llm_call("p", model="m", provider=provider, output_schema=Point)
    assert first.tool_calls == (call,)
    assert llm_call("p", model="m", provider=provider, output_schema=Point).data == Point(0, 0)
    with pytest.raises(RuntimeError, match="ran out of replies"):
        llm_call("p", model="m", provider=provider)


def test_an_agent_with_an_output_schema_runs_offline() -> None:
    from steptrace.agent import agent_loop, tool

    @tool
    def lookup(city: str) -> str:
        """Look a city up."""
        return f"{city}: 2 million people"

    provider = ScriptedProvider(
        [Reply(tool_calls=[ToolCall(id="c1", name="lookup", arguments={"city": "Paris"})])],
        schema_answers=True,
    )
    result = agent_loop(
        "Describe Paris", model="m", provider=provider, tools=[lookup], output_schema=Point
    )
    assert result.data == Point(0, 0)


# A strategy of satisfiable JSON Schemas built from the keywords schema_instance covers.
_scalars = st.one_of(
    st.builds(
        lambda low, span, exclusive: (
            {"type": "integer", "exclusiveMinimum": low, "maximum": low + span + 1}
            if exclusive
            else {"type": "integer", "minimum": low, "maximum": low + span}
        ),
        st.integers(-1000, 1000),
        st.integers(0, 50),
        st.booleans(),
    ),
    st.builds(
        lambda low, span: {
            "type": "number",
            "exclusiveMinimum": low,
            "exclusiveMaximum": low + span,
        },
        st.floats(-1e6, 1e6),
        st.floats(0.01, 100),
    ),
    st.builds(
        lambda low, extra, fmt: {
            "type": "string",
            "minLength": low,
            "maxLength": low + extra,
            **({"format": fmt} if fmt else {}),
        },
        st.integers(0, 30),
        st.integers(0, 30),
        st.sampled_from([None, "date", "email", "uuid"]),
    ),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), min_size=1, max_size=3).map(
        lambda values: {"enum": values}
    ),
)


def _compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    properties = st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), children, max_size=4)
    return st.one_of(
        st.builds(
            lambda items, low: {"type": "array", "items": items, "minItems": low},
            children,
            st.integers(0, 3),
        ),
        properties.flatmap(
            lambda props: st.builds(
                lambda required: {"type": "object", "properties": props, "required": required},
                st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([]),
            )
        ),
        st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}),
    )


_schemas = st.recursive(_scalars, _compound, max_leaves=12)


@given(_schemas)
def test_the_instance_built_for_a_schema_is_valid(schema: dict[str, Any]) -> None:
    # Checked by the validator llm_call uses (jsonschema for a schema dict).
    assert OutputSchema.of(schema).validate(json.dumps(schema_instance(schema))) == (
        schema_instance(schema),
        [],
    )


def test_references_into_defs_are_followed() -> None:
    schema = {
        "type": "object",
        "properties": {"item": {"$ref": "#/$defs/Item"}},
        "required": ["item"],
        "$defs": {"Item": {"type": "object", "properties": {"n": {"const": 3}}, "required": ["n"]}},
    }
    assert schema_instance(schema) == {"item": {"n": 3}}
