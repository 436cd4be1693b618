"""Record/replay of provider calls: the cassette format, offline replay in
recorded order, the missing-request error, validation, redaction, threads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from steptrace.errors import StepTraceError
from steptrace.llm._types import LlmRequest, LlmResponse, Message, Provider, ToolCall, ToolSpec
from steptrace.llm.providers.replay import (
    CassetteError,
    RecordingProvider,
    ReplayMissing,
    ReplayProvider,
    cassette_from_calls,
    fingerprint,
    response_from_dict,
    response_to_dict,
)

SECRET = "sk-proj-abcdefghijklmnopqrstuvwx"
WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


class FakeProvider:
    """Deterministic: the n-th call (counted across all requests) answers
    ``answer n: <last message>``, with a tool call when tools are offered."""

    name = "fake"

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls = 0
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def _respond(self, request: LlmRequest) -> LlmResponse:
        last = request.messages[-1].content
        if last == self.fail_on:
            raise RuntimeError("provider failed")
        with self._lock:
            self.calls += 1
            n = self.calls
        tool_calls: tuple[ToolCall, ...] = ()
        if request.tools:
            arguments = {"city": last.rsplit(" ", 1)[-1], "n": n}
            tool_calls = (
                ToolCall(
                    id=f"call_{n}",
                    name=request.tools[0].name,
                    arguments=arguments,
                    raw_arguments=json.dumps(arguments),
                ),
            )
        return LlmResponse(
            text="" if tool_calls else f"answer {n}: {last}",
            model=f"{request.model}-2024-08-06",
            input_tokens=10 + len(last),
            output_tokens=n,
            tool_calls=tool_calls,
            cache_read_tokens=n % 3,
            cache_write_tokens=n % 2,
            reasoning_tokens=n % 5,
            response_id=f"resp_{n}",
            finish_reason="tool_calls" if tool_calls else "stop",
        )

    def complete(self, request: LlmRequest) -> LlmResponse:
        return self._respond(request)

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        await asyncio.sleep(0)
        return self._respond(request)


def ask(content: str, model: str = "gpt-4o", **kwargs: Any) -> LlmRequest:
    return LlmRequest(model=model, messages=(Message(role="user", content=content),), **kwargs)


def script() -> list[LlmRequest]:
    """Six calls: a repeated question (three times), a tool round trip, another model."""
    question = ask("What is 2+2?", max_tokens=50, temperature=0.0)
    weather = ask("Weather in Paris", tools=(WEATHER,))
    follow_up = LlmRequest(
        model="gpt-4o",
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content="Weather in Paris"),
            Message(
                role="assistant",
                tool_calls=(
                    ToolCall(id="call_2", name="get_weather", arguments={"city": "Paris"}),
                ),
            ),
            Message(role="tool", content="18C and sunny", tool_call_id="call_2"),
        ),
        tools=(WEATHER,),
    )
    other = ask("What is 2+2?", model="claude-sonnet-4")
    return [question, weather, question, follow_up, question, other]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"network access attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def cassette(tmp_path: Path) -> Path:
    return tmp_path / "run.jsonl"


def record(path: Path, requests: list[LlmRequest]) -> tuple[FakeProvider, list[LlmResponse]]:
    fake = FakeProvider()
    recorder = RecordingProvider(fake, path)
    return fake, [recorder.complete(r) for r in requests]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- round trip -----------------------------------------------------------------


@pytest.mark.usefixtures("no_network")
def test_replay_answers_every_recorded_call_in_order_offline(cassette: Path) -> None:
    with socket.socket() as probe, pytest.raises(AssertionError, match="network access"):
        probe.connect(("127.0.0.1", 9))  # the guard itself works
    fake, recorded = record(cassette, script())
    assert fake.calls == 6
    assert recorded[0] != recorded[2] != recorded[4]  # repeats got distinct answers
    assert recorded[1].tool_calls[0].arguments == {"city": "Paris", "n": 2}

    replay = ReplayProvider(cassette)
    replayed = [replay.complete(r) for r in script()]

    assert replayed == recorded
    assert fake.calls == 6
    assert replay.unplayed == ()
    replayed[1].tool_calls[0].arguments["city"] = "changed"  # type: ignore[index]
    assert replay.complete(script()[1]).tool_calls[0].arguments["city"] == "Paris"
    assert len(replay) == 6


def test_identical_requests_repeat_the_last_answer_when_used_up(cassette: Path) -> None:
    _, recorded = record(cassette, script())
    replay = ReplayProvider(cassette)
    question = script()[0]
    answers = [replay.complete(question).text for _ in range(5)]
    assert (
        answers == [recorded[0].text, recorded[2].text, recorded[4].text] + [recorded[4].text] * 2
    )
    assert replay.unplayed == (3, 5, 7)  # the other three calls, by cassette line


def test_cassette_lines_have_the_documented_shape(cassette: Path) -> None:
    _, recorded = record(cassette, script())
    header, *calls = lines(cassette)
    assert header["steptrace_cassette"] == 1
    assert set(header) == {"steptrace_cassette", "created"}
    assert header["created"].endswith("+00:00")
    assert len(calls) == 6
    for request, call, response in zip(script(), calls, recorded, strict=True):
        data = request.fingerprint_data()
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        assert call["fingerprint"] == hashlib.sha256(canonical.encode()).hexdigest()
        assert call["fingerprint"] == fingerprint(data)
        assert call["request"] == data
        assert call["response"] == response_to_dict(response)
    assert set(calls[1]["response"]) == {
        "text",
        "model",
        "input_tokens",
        "output_tokens",
        "tool_calls",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "response_id",
        "finish_reason",
    }
    assert calls[1]["response"]["tool_calls"] == [
        {
            "id": "call_2",
            "name": "get_weather",
            "arguments": {"city": "Paris", "n": 2},
            "raw_arguments": '{"city": "Paris", "n": 2}',
        }
    ]


def test_response_dict_round_trip_and_defaults() -> None:
    full = LlmResponse(
        text="hi",
        model="m",
        input_tokens=3,
        output_tokens=4,
        tool_calls=(ToolCall(id="a", name="f", arguments={"x": [1, 2]}, raw_arguments="{}"),),
        cache_read_tokens=1,
        cache_write_tokens=2,
        reasoning_tokens=5,
        response_id="r",
        finish_reason="stop",
    )
    assert response_from_dict(response_to_dict(full)) == full
    minimal = {"text": "", "model": "m", "input_tokens": 0, "output_tokens": 0}
    assert response_from_dict(minimal) == LlmResponse(
        text="", model="m", input_tokens=0, output_tokens=0
    )


def test_recording_provider_takes_the_inner_name(cassette: Path) -> None:
    recorder = RecordingProvider(FakeProvider(), cassette)
    assert recorder.name == "fake"
    assert RecordingProvider(FakeProvider(), cassette, name="openai").name == "openai"
    assert isinstance(recorder, Provider)
    assert isinstance(ReplayProvider(cassette), Provider)
    assert ReplayProvider(cassette).name == "replay"
    assert ReplayProvider(cassette, name="openai").name == "openai"


def test_failed_inner_calls_are_not_recorded(cassette: Path) -> None:
    recorder = RecordingProvider(FakeProvider(fail_on="boom"), cassette)
    recorder.complete(ask("fine"))
    with pytest.raises(RuntimeError, match="provider failed"):
        recorder.complete(ask("boom"))
    assert len(lines(cassette)) == 2


def test_recording_appends_to_an_existing_cassette_or_overwrites(cassette: Path) -> None:
    record(cassette, script()[:2])
    record(cassette, script()[2:3])
    assert len(lines(cassette)) == 4  # one header, three calls
    RecordingProvider(FakeProvider(), cassette, overwrite=True)
    assert len(lines(cassette)) == 1


def test_recording_refuses_a_file_that_is_not_a_cassette(cassette: Path) -> None:
    cassette.write_text("hello\n", encoding="utf-8")
    with pytest.raises(CassetteError, match="line 1: not valid JSON"):
        RecordingProvider(FakeProvider(), cassette)
    cassette.write_text('{"steptrace_cassette": 1}\n{"fingerprint": "ab', encoding="utf-8")
    with pytest.raises(CassetteError, match="incomplete line"):
        RecordingProvider(FakeProvider(), cassette)


def test_streaming_request_gets_the_whole_text_once(cassette: Path) -> None:
    _, recorded = record(cassette, script())
    chunks: list[str] = []
    question = ask(
        "What is 2+2?", max_tokens=50, temperature=0.0, stream=True, on_text=chunks.append
    )
    response = ReplayProvider(cassette).complete(question)
    assert chunks == [recorded[0].text]
    assert response == recorded[0]


def test_strict_order(cassette: Path) -> None:
    _, recorded = record(cassette, script())
    replay = ReplayProvider(cassette, strict_order=True)
    assert [replay.complete(r) for r in script()] == recorded
    with pytest.raises(ReplayMissing, match="all 6 call"):
        replay.complete(script()[0])

    replay = ReplayProvider(cassette, strict_order=True)
    replay.complete(script()[0])
    with pytest.raises(ReplayMissing, match="strict order expects the call recorded at line 3"):
        replay.complete(script()[3])
    assert replay.unplayed == (3, 4, 5, 6, 7)


# --- missing requests -----------------------------------------------------------


def test_missing_request_names_the_closest_recorded_request_with_a_diff(cassette: Path) -> None:
    record(cassette, script())
    replay = ReplayProvider(cassette)
    with pytest.raises(ReplayMissing) as caught:
        replay.complete(ask("Weather in Lyon", tools=(WEATHER,)))
    err = caught.value
    assert isinstance(err, StepTraceError)
    assert err.closest_line == 3
    assert err.closest == script()[1].fingerprint_data()
    message = str(err)
    assert "no recorded response for this request (model 'gpt-4o'" in message
    assert "closest recorded request: line 3" in message
    assert '-      "content": "Weather in Paris",' in message
    assert '+      "content": "Weather in Lyon",' in message
    assert "--- recorded (line 3)" in message
    assert err.diff in message


def test_closest_request_prefers_the_same_model(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    answer = {"text": "x", "model": "m", "input_tokens": 1, "output_tokens": 1}
    cassette_from_calls(
        [
            (ask("a long question about apples", model="model-a").fingerprint_data(), answer),
            (ask("a long question about pears", model="model-b").fingerprint_data(), answer),
        ],
        path,
    )
    replay = ReplayProvider(path)
    with pytest.raises(ReplayMissing) as same_model:
        replay.complete(ask("a long question about pears!", model="model-a"))
    assert same_model.value.closest_line == 2
    with pytest.raises(ReplayMissing) as by_text:
        replay.complete(ask("a long question about pears!", model="model-c"))
    assert by_text.value.closest_line == 3


def test_any_change_to_the_request_is_a_miss(cassette: Path) -> None:
    record(cassette, script())
    replay = ReplayProvider(cassette)
    with pytest.raises(ReplayMissing, match=r'-  "temperature": 0\.0,\n\+  "temperature": 0\.5,'):
        replay.complete(ask("What is 2+2?", max_tokens=50, temperature=0.5))


def test_multiline_content_is_diffed_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    answer = {"text": "x", "model": "m", "input_tokens": 1, "output_tokens": 1}
    prompt = "\n".join(f"rule {i}: be careful" for i in range(50))
    cassette_from_calls([(ask(prompt).fingerprint_data(), answer)], path)
    with pytest.raises(ReplayMissing) as caught:
        ReplayProvider(path).complete(ask(prompt.replace("rule 30:", "rule 30 (new):")))
    assert '-        "rule 30: be careful",' in caught.value.diff
    assert '+        "rule 30 (new): be careful",' in caught.value.diff


def test_empty_cassette_says_so(cassette: Path) -> None:
    RecordingProvider(FakeProvider(), cassette)
    for strict_order in (False, True):
        replay = ReplayProvider(cassette, strict_order=strict_order)
        with pytest.raises(ReplayMissing, match="the cassette holds no calls") as caught:
            replay.complete(ask("hi"))
        assert caught.value.closest is None


def test_replay_missing_pickles(cassette: Path) -> None:
    record(cassette, script())
    with pytest.raises(ReplayMissing) as caught:
        ReplayProvider(cassette).complete(ask("unknown"))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(copy, ReplayMissing)
    assert str(copy) == str(caught.value)
    assert (copy.closest_line, copy.diff, copy.fingerprint) == (
        caught.value.closest_line,
        caught.value.diff,
        caught.value.fingerprint,
    )


# --- malformed cassettes --------------------------------------------------------

HEADER = '{"steptrace_cassette": 1, "created": "2025-01-01T00:00:00+00:00"}'
GOOD_CALL: dict[str, Any] = {
    "fingerprint": "0" * 64,
    "request": ask("hi").fingerprint_data(),
    "response": {
        "text": "hello",
        "model": "gpt-4o",
        "input_tokens": 1,
        "output_tokens": 1,
        "tool_calls": [{"id": "c", "name": "f", "arguments": {}, "raw_arguments": "{}"}],
    },
}


def call_with(path: tuple[str | int, ...], value: Any) -> str:
    data = json.loads(json.dumps(GOOD_CALL))
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "empty file, not a steptrace cassette"),
        ('{"version": 1}\n', "line 1: not a steptrace cassette header"),
        ('{"steptrace_cassette": 2}\n', "line 1: cassette format 2 is not supported"),
        (f"{HEADER}\n{{oops\n", "line 2: not valid JSON"),
        (f"{HEADER}\n[1, 2]\n", "line 2: expected an object, got list"),
        (f"{HEADER}\n\n{call_with(('fingerprint',), 'abc')}\n", "line 3: fingerprint: expected"),
        (f"{HEADER}\n{call_with(('request',), KeyError)}\n", "line 2: request: missing"),
        (f"{HEADER}\n{call_with(('response',), KeyError)}\n", "line 2: response: missing"),
        (
            f"{HEADER}\n{call_with(('request', 'model'), 7)}\n",
            "line 2: request.model: expected a string, got int 7",
        ),
        (
            f"{HEADER}\n{json.dumps(GOOD_CALL)}\n{call_with(('response', 'input_tokens'), '12')}\n",
            "line 3: response.input_tokens: expected a non-negative integer, got str '12'",
        ),
        (
            f"{HEADER}\n{call_with(('response', 'output_tokens'), -1)}\n",
            "line 2: response.output_tokens: expected a non-negative integer",
        ),
        (
            f"{HEADER}\n{call_with(('response', 'text'), KeyError)}\n",
            "line 2: response.text: missing",
        ),
        (
            f"{HEADER}\n{call_with(('response', 'tool_calls', 0, 'name'), KeyError)}\n",
            "line 2: response.tool_calls[0].name: missing",
        ),
        (
            f"{HEADER}\n{call_with(('response', 'finish_reason'), 3)}\n",
            "line 2: response.finish_reason: expected a string or null",
        ),
    ],
)
def test_malformed_cassettes_name_the_line_and_field(
    cassette: Path, content: str, expected: str
) -> None:
    cassette.write_text(content, encoding="utf-8")
    with pytest.raises(CassetteError) as caught:
        ReplayProvider(cassette)
    assert expected in str(caught.value)
    assert str(cassette) in str(caught.value)
    assert isinstance(caught.value, StepTraceError)


def test_a_valid_hand_written_cassette_loads(cassette: Path) -> None:
    cassette.write_text(f"{HEADER}\n{json.dumps(GOOD_CALL)}\n\n", encoding="utf-8")
    assert len(ReplayProvider(cassette)) == 1


# --- redaction ------------------------------------------------------------------


def test_secrets_in_requests_never_reach_the_file_or_the_error(cassette: Path) -> None:
    leaky = LlmRequest(
        model="gpt-4o",
        messages=(
            Message(role="user", content=f"my key is {SECRET}, keep it safe"),
            Message(
                role="assistant",
                tool_calls=(ToolCall(id="c1", name="login", arguments={"token": SECRET}),),
            ),
        ),
    )
    _, recorded = record(cassette, [leaky])
    text = cassette.read_text(encoding="utf-8")
    assert SECRET not in text
    assert "my key is [REDACTED], keep it safe" in text

    replay = ReplayProvider(cassette)
    assert replay.complete(leaky) == recorded[0]
    other = ask(f"another {SECRET} question")
    with pytest.raises(ReplayMissing) as caught:
        replay.complete(other)
    assert SECRET not in str(caught.value)
    assert SECRET not in json.dumps(caught.value.request)


def test_cassette_rebuilt_from_redacted_records_still_replays(tmp_path: Path) -> None:
    path = tmp_path / "rebuilt.jsonl"
    leaky = ask(f"use {SECRET} please")
    stored_request = json.loads(json.dumps(leaky.fingerprint_data()).replace(SECRET, "[REDACTED]"))
    response = {"text": "done", "model": "gpt-4o", "input_tokens": 5, "output_tokens": 1}
    assert cassette_from_calls([(stored_request, response)], path) == 1
    assert ReplayProvider(path).complete(leaky).text == "done"


# --- rebuilding from stored calls -----------------------------------------------


def test_cassette_from_calls_replays_like_a_recording(cassette: Path, tmp_path: Path) -> None:
    _, recorded = record(cassette, script())
    rebuilt = tmp_path / "rebuilt.jsonl"
    calls = [
        (r.fingerprint_data(), response_to_dict(resp))
        for r, resp in zip(script(), recorded, strict=True)
    ]
    assert cassette_from_calls(calls, rebuilt) == 6
    assert [c["request"] for c in lines(rebuilt)[1:]] == [c["request"] for c in lines(cassette)[1:]]
    replay = ReplayProvider(rebuilt)
    assert [replay.complete(r) for r in script()] == recorded


def test_cassette_from_calls_rejects_bad_records_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("previous\n", encoding="utf-8")
    good = {"text": "x", "model": "m", "input_tokens": 1, "output_tokens": 1}
    bad = {"text": "x", "model": "m", "input_tokens": 1}
    request = ask("hi").fingerprint_data()
    with pytest.raises(CassetteError, match=r"call 2: response\.output_tokens: missing"):
        cassette_from_calls([(request, good), (request, bad)], path)
    with pytest.raises(CassetteError, match=r"call 1: request\.messages: expected a list"):
        cassette_from_calls([({"model": "m"}, good)], path)
    assert path.read_text(encoding="utf-8") == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


# --- async and threads ----------------------------------------------------------


@pytest.mark.usefixtures("no_network")
def test_async_record_and_replay(cassette: Path) -> None:
    fake = FakeProvider()

    async def go() -> tuple[list[LlmResponse], list[LlmResponse]]:
        recorder = RecordingProvider(fake, cassette)
        recorded = [await recorder.acomplete(r) for r in script()]
        replay = ReplayProvider(cassette)
        return recorded, [await replay.acomplete(r) for r in script()]

    recorded, replayed = asyncio.run(go())
    assert replayed == recorded
    assert fake.calls == 6


def test_concurrent_recording_from_threads_keeps_every_call(cassette: Path) -> None:
    fake = FakeProvider()
    recorders = [RecordingProvider(fake, cassette), RecordingProvider(fake, cassette)]
    results: dict[str, LlmResponse] = {}
    results_lock = threading.Lock()
    barrier = threading.Barrier(8)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(25):
            request = ask(f"worker {worker} question {i} " + "x" * 2000)
            response = recorders[worker % 2].complete(request)
            with results_lock:
                results[request.messages[0].content] = response

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    header, *calls = lines(cassette)
    assert header["steptrace_cassette"] == 1
    assert len(calls) == 200 == fake.calls
    by_content = {c["request"]["messages"][0]["content"]: c["response"] for c in calls}
    assert by_content == {k: response_to_dict(v) for k, v in results.items()}
    replay = ReplayProvider(cassette)
    for content, response in results.items():
        assert replay.complete(ask(content)) == response
