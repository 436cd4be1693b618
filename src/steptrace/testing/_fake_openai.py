"""A fake OpenAI Chat Completions API, served by ``FakeServer`` on 127.0.0.1.

This module owns everything OpenAI-shaped in the test doubles: the
``POST /v1/chat/completions`` route (``add_openai_routes``), the script that
decides each answer (``OpenAIReply``, ``OpenAIToolCall``, ``OpenAIErrorReply``,
or a function of the request), and ``FakeOpenAI``, a server plus script in one
context manager for users' own tests. Answers are shaped as the real API
returns them: a ``chat.completion`` object whose ``choices[0].message`` holds
``content`` and/or ``tool_calls`` (arguments as a JSON string), a
``finish_reason``, and ``usage`` with ``prompt_tokens`` (cached included),
``completion_tokens`` (reasoning included), ``total_tokens``,
``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens``. With ``"stream": true`` it sends
``chat.completion.chunk`` events (role, content and tool-call deltas, the
finish reason), then, when ``stream_options.include_usage`` is true, a last
chunk with ``choices: []`` and the usage, then ``data: [DONE]``. Errors come
back with the real status codes, OpenAI error bodies
(``{"error": {"message", "type", "param", "code"}}``) and headers
(``retry-after``, ``x-request-id``), or as an ``error`` object in the middle of
a stream.

``response_format`` is passed through: the fake answers the scripted text as
is, so a script decides whether the output fits the requested schema (which is
how schema retries are tested). Like the real API it refuses a ``json_schema``
format without a name and a ``json_object`` request whose messages never say
"json". Token counts are ~4 characters a token of the request's text (message
contents, tool calls, tool definitions, the response schema) plus 3 a message
and 3 a request, and of the answer, unless a reply fixes them;
``max_completion_tokens`` (or ``max_tokens``) truncates an answer that is too
long, with ``finish_reason`` ``length``. Standard library only; the
``client()`` helpers import the ``openai`` SDK when called.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias

from ._server import FakeServer, RecordedRequest, Reply

if TYPE_CHECKING:
    import openai

__all__ = [
    "FAKE_OPENAI_API_KEY",
    "FakeOpenAI",
    "FakeOpenAIRoutes",
    "OpenAIErrorReply",
    "OpenAIReply",
    "OpenAIScript",
    "OpenAIToolCall",
    "add_openai_routes",
    "count_openai_tokens",
]

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
"""Per-message overhead of the fake's prompt count (as OpenAI's chat format has)."""
TOKENS_PER_REQUEST = 3
FAKE_OPENAI_API_KEY = "sk-test-fake-openai-0000000000"
"""The key ``FakeOpenAI.client()`` uses; it is not a real credential."""
CHAT_PATH = "/v1/chat/completions"
_FINGERPRINT = "fp_steptrace0"


@dataclass(frozen=True, kw_only=True)
class OpenAIToolCall:
    """A function tool call the fake model answers with (``id`` made up if None).

    ``arguments`` is sent as its JSON text; a string is sent as is, so a test can
    script arguments that are not valid JSON."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        args = self.arguments
        return args if isinstance(args, str) else json.dumps(dict(args))


@dataclass(frozen=True, kw_only=True)
class OpenAIReply:
    """One successful answer.

    ``prompt_tokens`` and ``completion_tokens`` default to the fake's estimates
    (``completion_tokens`` includes ``reasoning_tokens``, as OpenAI counts).
    ``cached_tokens`` is the part of the prompt read from the cache (capped at
    ``prompt_tokens``). ``finish_reason`` defaults to ``tool_calls`` when there
    are tool calls, else ``stop``. ``refusal`` answers with a refusal instead of
    content. ``model`` defaults to the request's; ``delay`` seconds pass before
    the answer starts.

    Misbehaviour, for tests of broken or hostile servers: ``usage`` is sent
    instead of the counted usage (any JSON, e.g. negative or string counts),
    ``omit_usage`` sends none (as some compatible servers do), ``cut_after``
    closes a stream after that many events, with no finish and no ``[DONE]``,
    and ``trickle_s``/``trickle_for`` keep the connection alive with a byte
    every ``trickle_s`` seconds for ``trickle_for`` seconds before answering.
    A script may also answer with a ``Reply``, sent as it is (e.g. a body that
    is not JSON).
    """

    text: str = ""
    tool_calls: Sequence[OpenAIToolCall] = ()
    refusal: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    id: str | None = None
    delay: float = 0.0
    usage: Any = None
    omit_usage: bool = False
    cut_after: int | None = None
    trickle_s: float | None = None
    trickle_for: float = 0.0

    @classmethod
    def json(cls, value: Any, **fields: Any) -> OpenAIReply:
        """An answer whose text is ``value`` as JSON (structured output)."""
        return cls(text=json.dumps(value), **fields)


def _default_error_type(status: int) -> str:
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


@dataclass(frozen=True, kw_only=True)
class OpenAIErrorReply:
    """An error answer: HTTP ``status`` with an OpenAI error body.

    ``type`` defaults to what the real API sends for the status
    (``invalid_request_error``, ``requests`` for 429, ``server_error`` for 5xx).
    ``retry_after`` sets the ``retry-after`` header (seconds). ``mid_stream``: a
    streaming request gets a ``200`` stream that starts the answer and then
    sends ``{"error": {...}}``, as the real API does when it fails mid-answer.
    Use the class methods for the common cases.
    """

    status: int
    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    mid_stream: bool = False
    delay: float = 0.0

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type or _default_error_type(self.status),
                "param": self.param,
                "code": self.code,
            }
        }

    @classmethod
    def rate_limited(
        cls,
        message: str = "Rate limit reached for requests per min (RPM): Limit 3, Used 3, "
        "Requested 1. Please try again in 20s.",
        *,
        retry_after: float | None = 20.0,
    ) -> OpenAIErrorReply:
        return cls(status=429, message=message, code="rate_limit_exceeded", retry_after=retry_after)

    @classmethod
    def server_error(
        cls,
        message: str = "The server had an error while processing your request. Sorry about that!",
    ) -> OpenAIErrorReply:
        return cls(status=500, message=message, type="server_error")

    @classmethod
    def authentication(
        cls,
        message: str = "Incorrect API key provided: sk-test-****0000. You can find your API "
        "key at https://platform.openai.com/account/api-keys.",
    ) -> OpenAIErrorReply:
        return cls(status=401, message=message, code="invalid_api_key")

    @classmethod
    def permission_denied(
        cls, message: str = "Country, region, or territory not supported"
    ) -> OpenAIErrorReply:
        return cls(status=403, message=message, code="unsupported_country_region_territory")

    @classmethod
    def bad_request(
        cls, message: str = "Invalid value for 'temperature'.", *, param: str | None = None
    ) -> OpenAIErrorReply:
        return cls(status=400, message=message, param=param)

    @classmethod
    def not_found(
        cls,
        message: str = "The model `gpt-nonexistent` does not exist or you do not have "
        "access to it.",
    ) -> OpenAIErrorReply:
        return cls(status=404, message=message, code="model_not_found")


ScriptItem: TypeAlias = str | OpenAIReply | OpenAIErrorReply | Reply
OpenAIScript: TypeAlias = Iterable[ScriptItem] | Callable[[RecordedRequest], ScriptItem]
"""Replies in order (a string is a text answer), or a function of the request."""


def count_openai_tokens(text: str) -> int:
    """The fake's token count for a text: ~4 characters a token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _content_chars(content: Any) -> int:
    """Characters of a message's content: a string, or a list of content parts."""
    if isinstance(content, str):
        return len(content)
    total = 0
    for part in content if isinstance(content, list) else ():
        if isinstance(part, Mapping) and part.get("type") == "text":
            total += len(str(part.get("text", "")))
        elif part is not None:
            total += len(json.dumps(part))
    return total


def _message_chars(message: Mapping[str, Any]) -> int:
    chars = _content_chars(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function", {}) if isinstance(call, Mapping) else {}
        chars += len(str(function.get("name", ""))) + len(str(function.get("arguments", "")))
    return chars


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    chars = sum(_message_chars(m) for m in messages)
    for tool in body.get("tools") or ():
        chars += len(json.dumps(tool))
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and "json_schema" in response_format:
        chars += len(json.dumps(response_format["json_schema"]))
    return (
        math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REQUEST
    )


def _mentions_json(body: Mapping[str, Any]) -> bool:
    for message in body.get("messages") or ():
        if isinstance(message, Mapping) and "json" in json.dumps(message.get("content")).lower():
            return True
    return False


def _pieces(text: str) -> list[str]:
    """Word-sized deltas, as a model streams them."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


class FakeOpenAIRoutes:
    """The script behind a server's ``/v1/chat/completions`` route.

    ``push`` adds replies to the queue; ``requests`` holds the JSON bodies the
    route received, in order. With a function as the script, the queue is
    consulted first and the function answers when it is empty.
    """

    def __init__(self, script: OpenAIScript = (), *, require_api_key: bool = True) -> None:
        self._function: Callable[[RecordedRequest], ScriptItem] | None = None
        self._queue: deque[ScriptItem] = deque()
        if callable(script):
            self._function = script
        elif isinstance(script, str | OpenAIReply | OpenAIErrorReply):
            raise TypeError("add_openai_routes: script must be a list of replies, not one reply")
        else:
            self._queue.extend(script)
        self.require_api_key = require_api_key
        self.requests: list[Mapping[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def push(self, *items: ScriptItem) -> None:
        """Queue more replies (answered before a script function is consulted)."""
        with self._lock:
            self._queue.extend(items)

    def _next_number(self) -> int:
        with self._lock:
            return next(self._ids)

    def _next_item(self, request: RecordedRequest) -> ScriptItem:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            number = len(self.requests)
        if self._function is not None:
            return self._function(request)
        return OpenAIErrorReply(
            status=400,
            message=f"fake OpenAI: script exhausted at request {number}: push more replies",
            code="fake_script_exhausted",
        )

    def handle(self, request: RecordedRequest) -> Reply:
        body = request.body if isinstance(request.body, Mapping) else {}
        with self._lock:
            self.requests.append(body)
        headers = {"x-request-id": f"req_{self._next_number():032x}"}
        refusal = self._refusal(request)
        item = refusal if refusal is not None else self._next_item(request)
        if isinstance(item, str):
            item = OpenAIReply(text=item)
        if isinstance(item, Reply):
            return item
        if not isinstance(item, OpenAIReply | OpenAIErrorReply):
            raise TypeError(f"fake OpenAI: a script gave {item!r}, not a reply")
        if item.delay:
            time.sleep(item.delay)
        if isinstance(item, OpenAIErrorReply):
            return self._error(item, body, headers)
        completion = self._completion(item, body)
        if item.omit_usage:
            completion.pop("usage")
        elif item.usage is not None:
            completion["usage"] = item.usage
        misbehaviour: dict[str, Any] = {
            "cut_after": item.cut_after,
            "trickle_s": item.trickle_s,
            "trickle_for": item.trickle_for,
        }
        if body.get("stream"):
            events = self._events(completion, body)
            return Reply(events=events, headers=headers, **misbehaviour)
        return Reply(body=completion, headers=headers, **misbehaviour)

    def _refusal(self, request: RecordedRequest) -> OpenAIErrorReply | None:
        """The real API's answer to a request it refuses before the model runs."""
        if not isinstance(request.body, Mapping):
            return OpenAIErrorReply.bad_request(
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)"
            )
        body = request.body
        auth = request.headers.get("authorization", "")
        if self.require_api_key and not auth.removeprefix("Bearer").strip():
            return OpenAIErrorReply(
                status=401,
                message="You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if not body.get("model"):
            return OpenAIErrorReply.bad_request("you must provide a model parameter")
        messages = body.get("messages")
        if messages is None:
            return OpenAIErrorReply(
                status=400,
                message="Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not messages:
            return OpenAIErrorReply(
                status=400,
                message="Invalid 'messages': empty array. Expected an array with minimum "
                "length 1, but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        if body.get("stream_options") is not None and not body.get("stream"):
            return OpenAIErrorReply.bad_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        response_format = body.get("response_format")
        if isinstance(response_format, Mapping):
            kind = response_format.get("type")
            schema = response_format.get("json_schema")
            if kind == "json_schema" and not (isinstance(schema, Mapping) and schema.get("name")):
                return OpenAIErrorReply(
                    status=400,
                    message="Missing required parameter: 'response_format.json_schema.name'.",
                    param="response_format.json_schema.name",
                    code="missing_required_parameter",
                )
            if kind == "json_object" and not _mentions_json(body):
                return OpenAIErrorReply.bad_request(
                    "'messages' must contain the word 'json' in some form, to use "
                    "'response_format' of type 'json_object'.",
                    param="messages",
                )
        return None

    def _error(
        self, item: OpenAIErrorReply, body: Mapping[str, Any], headers: dict[str, str]
    ) -> Reply:
        if item.mid_stream and body.get("stream"):
            start = self._completion(OpenAIReply(text="Partial answer"), body)
            events: list[tuple[str | None, Any]] = list(self._events(start, body))[:2]
            events.append((None, item.body()))
            return Reply(events=events, headers=headers)
        headers = {**headers, **item.headers}
        if item.retry_after is not None:
            headers["retry-after"] = f"{item.retry_after:g}"
        return Reply(status=item.status, body=item.body(), headers=headers)

    def _completion(self, reply: OpenAIReply, body: Mapping[str, Any]) -> dict[str, Any]:
        number = self._next_number()
        calls = [
            replace(call, id=call.id or f"call_{number:08d}{index:016d}")
            for index, call in enumerate(reply.tool_calls)
        ]
        text = reply.refusal if reply.refusal is not None else reply.text
        prompt_tokens = (
            reply.prompt_tokens if reply.prompt_tokens is not None else _prompt_tokens(body)
        )
        finish_reason = reply.finish_reason or ("tool_calls" if calls else "stop")
        if reply.completion_tokens is not None:
            completion_tokens = reply.completion_tokens
        else:
            output_chars = len(text) + sum(len(c.name) + len(c.arguments_json) for c in calls)
            completion_tokens = max(math.ceil(output_chars / CHARS_PER_TOKEN), 1)
            completion_tokens += reply.reasoning_tokens
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            if isinstance(limit, int) and completion_tokens > limit:
                keep = max(limit - reply.reasoning_tokens, 0) * CHARS_PER_TOKEN
                text, calls = text[:keep], []
                completion_tokens, finish_reason = limit, "length"
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if reply.refusal is not None or (calls and not text) else text,
            "refusal": reply.refusal,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for call in calls
            ]
        model = reply.model or body.get("model")
        return {
            "id": reply.id or f"chatcmpl-fake{number:016d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model if isinstance(model, str) else "",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {
                    "cached_tokens": min(reply.cached_tokens, prompt_tokens),
                    "audio_tokens": 0,
                },
                "completion_tokens_details": {
                    "reasoning_tokens": reply.reasoning_tokens,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }

    def _events(
        self, completion: Mapping[str, Any], body: Mapping[str, Any]
    ) -> Iterator[tuple[str | None, Any]]:
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        head = {k: completion[k] for k in ("id", "created", "model", "service_tier")}
        head["object"] = "chat.completion.chunk"
        head["system_fingerprint"] = _FINGERPRINT

        def chunk(delta: Mapping[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
            if include_usage:
                out["usage"] = None
            return out

        choice = completion["choices"][0]
        message = choice["message"]
        yield None, chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in _pieces(message["content"] or ""):
            yield None, chunk({"content": piece})
        for piece in _pieces(message["refusal"] or ""):
            yield None, chunk({"refusal": piece})
        for index, call in enumerate(message.get("tool_calls", ())):
            function = call["function"]
            opening = {"name": function["name"], "arguments": ""}
            yield (
                None,
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call["id"],
                                "type": "function",
                                "function": opening,
                            }
                        ]
                    }
                ),
            )
            raw = function["arguments"]
            for start in range(0, len(raw), 12):
                argument = {"arguments": raw[start : start + 12]}
                yield None, chunk({"tool_calls": [{"index": index, "function": argument}]})
        yield None, chunk({}, choice["finish_reason"])
        if include_usage and "usage" in completion:
            yield None, {**head, "choices": [], "usage": completion["usage"]}
        yield None, "[DONE]"


def add_openai_routes(
    server: FakeServer, script: OpenAIScript = (), *, require_api_key: bool = True
) -> FakeOpenAIRoutes:
    """Serve ``POST /v1/chat/completions`` on ``server`` from ``script``.

    ``script``: a list of replies used in order (a string is a text answer), or
    a function of the ``RecordedRequest`` returning one. Running out of listed
    replies answers a 400 saying so. Point an SDK at it with
    ``base_url=server.url + "/v1"``. Returns the route's state (``push``,
    ``requests``).
    """
    routes = FakeOpenAIRoutes(script, require_api_key=require_api_key)
    server.route("POST", CHAT_PATH, routes.handle)
    return routes


class FakeOpenAI:
    """A fake OpenAI API for a test: ``with FakeOpenAI(["Hello!"]) as fake:``.

    ``fake.client()`` / ``fake.async_client()`` give SDK clients pointed at it
    (no retries unless asked); ``fake.base_url`` is the base URL to give any
    OpenAI-compatible client (it ends in ``/v1``); ``fake.requests`` the JSON
    bodies it received; ``fake.push(...)`` queues more replies.

    ``server``: serve from a running ``FakeServer`` shared by many tests (the
    route is replaced; the server is left running on exit) instead of starting
    one per test.
    """

    def __init__(
        self,
        script: OpenAIScript = (),
        *,
        require_api_key: bool = True,
        server: FakeServer | None = None,
    ) -> None:
        self._owns_server = server is None
        self.server = FakeServer() if server is None else server
        self.routes = add_openai_routes(self.server, script, require_api_key=require_api_key)
        self.api_key = FAKE_OPENAI_API_KEY

    @property
    def base_url(self) -> str:
        return self.server.url + "/v1"

    url = base_url

    @property
    def requests(self) -> list[Mapping[str, Any]]:
        return self.routes.requests

    def push(self, *items: ScriptItem) -> None:
        self.routes.push(*items)

    def client(self, **options: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` talking to this fake (``max_retries=0`` by default)."""
        import openai

        options.setdefault("max_retries", 0)
        return openai.OpenAI(api_key=self.api_key, base_url=self.base_url, **options)

    def async_client(self, **options: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` talking to this fake (``max_retries=0`` by default)."""
        import openai

        options.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(api_key=self.api_key, base_url=self.base_url, **options)

    def __enter__(self) -> FakeOpenAI:
        if self._owns_server:
            self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns_server:
            self.server.stop()
