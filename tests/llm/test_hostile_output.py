"""Malformed model output and cassettes: deep nesting and absurd numbers.

Issue 15, case 9: structured output nested far too deep is a schema retry and
then ``SchemaValidationFailed``, never a ``RecursionError``; a replay cassette
line nested as deep, or with a token count of 10**400, is a ``CassetteError``
naming the line; a completion body nested that deep is a retryable provider
error. Hypothesis throws arbitrary JSON-ish text at the schema validator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import steptrace
from steptrace import SchemaRetry, llm
from steptrace.errors import ProviderUnavailable, SchemaValidationFailed
from steptrace.llm import LlmRequest, Message
from steptrace.llm._schema import OutputSchema
from steptrace.llm.openai.provider import OpenAIProvider
from steptrace.llm.providers.replay import CassetteError, ReplayProvider
from steptrace.testing import FakeServer, HttpReply, ScriptedProvider
from steptrace.testing._fake_openai import FakeOpenAI, OpenAIReply, OpenAIToolCall

DEEP = "[" * 100_000 + "]" * 100_000
NEARLY_DEEP = '{"a": ' * 900 + "1" + "}" * 900  # json.loads takes it; recursive validators may not


class Answer(BaseModel):
    city: str


SCHEMAS = [Answer, {"type": "object", "properties": {"city": {"type": "string"}}}]


@pytest.mark.parametrize("schema", SCHEMAS, ids=["pydantic", "json-schema"])
@pytest.mark.parametrize("bad", [DEEP, NEARLY_DEEP], ids=["deep", "nearly-deep"])
def test_deeply_nested_output_is_a_schema_retry_not_a_recursion_error(
    schema: object, bad: str
) -> None:
    provider = ScriptedProvider([bad, '{"city": "Paris"}'])
    with steptrace.run() as run:
        result = llm.llm_call("Where?", model="m", provider=provider, output_schema=schema)
    assert result.attempts == 2
    (retry,) = [e for e in run.events if isinstance(e, SchemaRetry)]
    assert any("nested too deeply" in error for error in retry.errors)
    data = result.data
    assert (data.city if isinstance(data, Answer) else data["city"]) == "Paris"


def test_only_deep_output_ends_in_schema_validation_failed() -> None:
    provider = ScriptedProvider([DEEP] * 3)
    with pytest.raises(SchemaValidationFailed) as caught:
        llm.llm_call("Where?", model="m", provider=provider, output_schema=Answer)
    assert len(caught.value.errors) == 3


JSONISH = st.one_of(
    st.text(max_size=50),
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["city", "x", ""]), inner, max_size=3)
        ),
        max_leaves=10,
    ).map(json.dumps),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"city": ' * n + '"x"' + "}" * n),
)


@settings(max_examples=150, deadline=None)
@given(text=JSONISH)
@pytest.mark.parametrize("schema", SCHEMAS, ids=["pydantic", "json-schema"])
def test_the_validator_answers_any_text_with_data_or_errors(schema: object, text: str) -> None:
    data, errors = OutputSchema.of(schema).validate(text)
    assert (data is None) == bool(errors)
    assert all(isinstance(error, str) and len(error) < 1000 for error in errors)


# -- replay cassettes --------------------------------------------------------------------

HEADER = '{"created":"2026-01-01T00:00:00+00:00","steptrace_cassette":1}'


def call_line(request: str, response: str) -> str:
    return f'{{"fingerprint":"{"a" * 64}","request":{request},"response":{response}}}'


GOOD_REQUEST = '{"model":"m","messages":[]}'
GOOD_RESPONSE = '{"text":"hi","model":"m","input_tokens":1,"output_tokens":1}'


@pytest.mark.parametrize(
    ("line", "named"),
    [
        (call_line(DEEP, GOOD_RESPONSE), "nested too deeply"),
        (call_line('{"model":"m","messages":' + NEARLY_DEEP + "}", GOOD_RESPONSE), "nested"),
        (
            call_line(
                GOOD_REQUEST,
                '{"text":"hi","model":"m","input_tokens":1' + "0" * 400 + ',"output_tokens":1}',
            ),
            "input_tokens",
        ),
        (
            call_line(
                GOOD_REQUEST,
                '{"text":"hi","model":"m","input_tokens":1,"output_tokens":1' + "0" * 5000 + "}",
            ),
            "line 3",
        ),
        (call_line(GOOD_REQUEST, '{"text":"hi","model":"m","input_tokens":1e400}'), "line 3"),
    ],
    ids=["deep", "nearly-deep-request", "10**400", "5000-digits", "1e400"],
)
def test_a_cassette_line_too_deep_or_too_big_fails_naming_the_line(
    tmp_path: Path, line: str, named: str
) -> None:
    path = tmp_path / "run.jsonl"
    good = call_line(GOOD_REQUEST, GOOD_RESPONSE)
    path.write_text(f"{HEADER}\n{good}\n{line}\n")
    with pytest.raises(CassetteError) as caught:
        ReplayProvider(path)
    message = str(caught.value)
    assert "line 3" in message
    assert named in message
    assert len(message) < 600


# -- a completion body nested too deep ---------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeServer() as server, FakeOpenAI(server=server) as running:
        yield running


def test_a_completion_body_nested_too_deep_is_a_retryable_provider_error(
    fake: FakeOpenAI,
) -> None:
    fake.push(HttpReply(raw=('{"id": ' + DEEP + "}").encode()))
    provider = OpenAIProvider(api_key="sk-test-0123456789", base_url=fake.base_url)
    request = LlmRequest(model="gpt-4o-mini", messages=(Message(role="user", content="hi"),))
    try:
        with pytest.raises(ProviderUnavailable, match="malformed"):
            provider.complete(request)
    finally:
        provider.close()


def test_deep_tool_arguments_through_the_sdk_reach_the_loop_as_text(fake: FakeOpenAI) -> None:
    fake.push(OpenAIReply(tool_calls=[OpenAIToolCall(name="f", arguments=DEEP[:40_000])]))
    provider = OpenAIProvider(api_key="sk-test-0123456789", base_url=fake.base_url)
    request = LlmRequest(model="gpt-4o-mini", messages=(Message(role="user", content="hi"),))
    try:
        (call,) = provider.complete(request).tool_calls
    finally:
        provider.close()
    assert call.arguments == {}
    arguments, why = call.parsed_arguments()
    assert arguments is None
    assert why is not None
    assert "nested too deeply" in why
