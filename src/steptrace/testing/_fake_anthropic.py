"""A fake Anthropic Messages API, served by ``FakeServer`` on 127.0.0.1.

This module owns everything Anthropic-shaped in the test doubles: the
``POST /v1/messages`` route (``add_anthropic_routes``), the script that decides
each answer (``AnthropicReply``, ``AnthropicToolUse``, ``AnthropicErrorReply``,
or a function of the request), and ``FakeAnthropic``, a server plus script in
one context manager for users' own tests. Answers are shaped as the real API
returns them: a ``message`` object with ``text`` and ``tool_use`` content
blocks, ``stop_reason`` and ``usage`` (``input_tokens`` without the cached
part, ``output_tokens``, ``cache_creation_input_tokens``,
``cache_read_input_tokens``); with ``"stream": true`` the real event sequence
(``message_start`` with ``output_tokens`` 1, ``ping``, ``content_block_start``,
``text_delta``/``input_json_delta`` deltas, ``content_block_stop``,
``message_delta`` with the stop reason and the final cumulative usage, input
and cache counts included, as the real API sends it,
``message_stop``). Errors come back with the real status codes, headers
(``retry-after``) and ``{"type": "error", "error": {...}}`` bodies, or as an
``error`` event in the middle of a stream.

Token counts are ~4 characters a token of the request's text (system, message
blocks, tool definitions) and of the answer, unless a reply fixes them.
Requests without an API key or without ``model``/``max_tokens``/``messages``
are refused as the real API refuses them. Standard library only; the
``client()`` helpers import the ``anthropic`` SDK when called.
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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from ._server import FakeServer, RecordedRequest, Reply

if TYPE_CHECKING:
    import anthropic

__all__ = [
    "AnthropicErrorReply",
    "AnthropicReply",
    "AnthropicScript",
    "AnthropicToolUse",
    "FakeAnthropic",
    "FakeAnthropicRoutes",
    "add_anthropic_routes",
    "count_anthropic_tokens",
]

CHARS_PER_TOKEN = 4
FAKE_API_KEY = "sk-ant-fake-0000000000000000"
"""The key ``FakeAnthropic.client()`` uses; it is not a real credential."""


@dataclass(frozen=True, kw_only=True)
class AnthropicToolUse:
    """A ``tool_use`` block the fake model answers with (``id`` made up if None)."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, kw_only=True)
class AnthropicReply:
    """One successful answer.

    ``input_tokens`` is Anthropic's count, which leaves out cached tokens; when
    None it is the request's estimated tokens minus ``cache_read_tokens`` and
    ``cache_write_tokens``. ``output_tokens`` defaults to the answer's estimate.
    ``stop_reason`` defaults to ``tool_use`` when there are tool uses, else
    ``end_turn``. ``delay`` seconds pass before the answer starts.
    """

    text: str = ""
    tool_uses: Sequence[AnthropicToolUse] = ()
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model: str | None = None
    id: str | None = None
    delay: float = 0.0


@dataclass(frozen=True, kw_only=True)
class AnthropicErrorReply:
    """An error answer: HTTP ``status`` with an Anthropic error body of ``type``.

    ``retry_after`` sets the ``retry-after`` header (seconds). ``mid_stream``:
    a streaming request gets a ``200`` stream that starts the message and then
    sends an ``error`` event, as the real API does when it overloads mid-answer.
    Use the class methods for the common cases.
    """

    status: int
    type: str
    message: str
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    mid_stream: bool = False
    delay: float = 0.0

    @classmethod
    def rate_limited(
        cls,
        message: str = "Number of request tokens has exceeded your rate limit.",
        *,
        retry_after: float | None = 1.0,
    ) -> AnthropicErrorReply:
        return cls(status=429, type="rate_limit_error", message=message, retry_after=retry_after)

    @classmethod
    def overloaded(
        cls, message: str = "Overloaded", *, mid_stream: bool = False
    ) -> AnthropicErrorReply:
        return cls(status=529, type="overloaded_error", message=message, mid_stream=mid_stream)

    @classmethod
    def server_error(cls, message: str = "Internal server error") -> AnthropicErrorReply:
        return cls(status=500, type="api_error", message=message)

    @classmethod
    def authentication(cls, message: str = "invalid x-api-key") -> AnthropicErrorReply:
        return cls(status=401, type="authentication_error", message=message)

    @classmethod
    def permission_denied(
        cls, message: str = "Your API key does not have permission to use the specified resource."
    ) -> AnthropicErrorReply:
        return cls(status=403, type="permission_error", message=message)

    @classmethod
    def bad_request(cls, message: str = "messages: field required") -> AnthropicErrorReply:
        return cls(status=400, type="invalid_request_error", message=message)

    @classmethod
    def not_found(cls, message: str = "model: not found") -> AnthropicErrorReply:
        return cls(status=404, type="not_found_error", message=message)


ScriptItem: TypeAlias = str | AnthropicReply | AnthropicErrorReply
AnthropicScript: TypeAlias = Iterable[ScriptItem] | Callable[[RecordedRequest], ScriptItem]
"""Replies in order (a string is a text answer), or a function of the request."""


def count_anthropic_tokens(text: str) -> int:
    """The fake's token count for a text: ~4 characters a token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _content_chars(content: Any) -> int:
    """Characters of a message's or system prompt's content (string or blocks)."""
    if isinstance(content, str):
        return len(content)
    total = 0
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            total += len(str(block.get("text", "")))
        elif kind == "tool_use":
            total += len(str(block.get("name", ""))) + len(json.dumps(block.get("input", {})))
        elif kind == "tool_result":
            total += _content_chars(block.get("content", ""))
        else:
            total += len(json.dumps(block))
    return total


def _request_tokens(body: Mapping[str, Any]) -> int:
    chars = _content_chars(body.get("system", ""))
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            chars += _content_chars(message.get("content", ""))
    for tool in body.get("tools") or ():
        chars += len(json.dumps(tool))
    return max(math.ceil(chars / CHARS_PER_TOKEN), 1)


def _error_body(kind: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    }


def _text_chunks(text: str) -> list[str]:
    """Word-sized deltas, as a model streams them."""
    return re.findall(r"\s*\S+\s*", text) or [text]


class FakeAnthropicRoutes:
    """The script behind a server's ``/v1/messages`` route.

    ``push`` adds replies to the queue; ``requests`` holds the JSON bodies the
    route received, in order. With a function as the script, the queue is
    consulted first and the function answers when it is empty.
    """

    def __init__(self, script: AnthropicScript = (), *, require_api_key: bool = True) -> None:
        self._function: Callable[[RecordedRequest], ScriptItem] | None = None
        self._queue: deque[ScriptItem] = deque()
        if callable(script):
            self._function = script
        elif isinstance(script, str | AnthropicReply | AnthropicErrorReply):
            raise TypeError("add_anthropic_routes: script must be a list of replies, not one reply")
        else:
            self._queue.extend(script)
        self.require_api_key = require_api_key
        self.requests: list[Mapping[str, Any]] = []
        self._answered = 0
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def push(self, *items: ScriptItem) -> None:
        """Queue more replies (answered before a script function is consulted)."""
        with self._lock:
            self._queue.extend(items)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_01{next(self._ids):022d}"

    def _next_item(self, request: RecordedRequest) -> ScriptItem:
        with self._lock:
            self._answered += 1
            if self._queue:
                return self._queue.popleft()
            number = self._answered
        if self._function is not None:
            return self._function(request)
        return AnthropicErrorReply(
            status=400,
            type="invalid_request_error",
            message=f"fake Anthropic: script exhausted at request {number}: push more replies",
        )

    def handle(self, request: RecordedRequest) -> Reply:
        body = request.body if isinstance(request.body, Mapping) else {}
        with self._lock:
            self.requests.append(body)
        request_id = self._next_id("req")
        refusal = self._refusal(request, body)
        item = refusal if refusal is not None else self._next_item(request)
        if isinstance(item, str):
            item = AnthropicReply(text=item)
        if not isinstance(item, AnthropicReply | AnthropicErrorReply):
            raise TypeError(f"fake Anthropic: a script gave {item!r}, not a reply")
        if item.delay:
            time.sleep(item.delay)
        headers = {"request-id": request_id}
        if isinstance(item, AnthropicErrorReply):
            return self._error(item, body, headers, request_id)
        message = self._message(item, body)
        if body.get("stream"):
            return Reply(events=self._events(message), headers=headers)
        return Reply(body=message, headers=headers)

    def _refusal(
        self, request: RecordedRequest, body: Mapping[str, Any]
    ) -> AnthropicErrorReply | None:
        headers = request.headers
        if self.require_api_key and not (headers.get("x-api-key") or headers.get("authorization")):
            return AnthropicErrorReply(
                status=401, type="authentication_error", message="x-api-key header is required"
            )
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return AnthropicErrorReply.bad_request(f"{name}: Field required")
        if not body["messages"]:
            return AnthropicErrorReply.bad_request("messages: at least one message is required")
        return None

    def _error(
        self,
        item: AnthropicErrorReply,
        body: Mapping[str, Any],
        headers: dict[str, str],
        request_id: str,
    ) -> Reply:
        error = _error_body(item.type, item.message, request_id)
        if item.mid_stream and body.get("stream"):
            start = self._message(AnthropicReply(), body)
            events = [
                ("message_start", {"type": "message_start", "message": _started(start)}),
                ("ping", {"type": "ping"}),
                ("error", {"type": "error", "error": error["error"]}),
            ]
            return Reply(events=events, headers=headers)
        headers = {**headers, **item.headers}
        if item.retry_after is not None:
            headers["retry-after"] = f"{item.retry_after:g}"
        if item.status == 529:
            headers.setdefault("x-should-retry", "true")
        return Reply(status=item.status, body=error, headers=headers)

    def _message(self, reply: AnthropicReply, body: Mapping[str, Any]) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if reply.text or not reply.tool_uses:
            content.append({"type": "text", "text": reply.text})
        content.extend(
            {
                "type": "tool_use",
                "id": use.id or self._next_id("toolu"),
                "name": use.name,
                "input": dict(use.input),
            }
            for use in reply.tool_uses
        )
        if reply.input_tokens is not None:
            input_tokens = reply.input_tokens
        else:
            cached = reply.cache_read_tokens + reply.cache_write_tokens
            input_tokens = max(_request_tokens(body) - cached, 0)
        if reply.output_tokens is not None:
            output_tokens = reply.output_tokens
        else:
            output_chars = len(reply.text) + sum(
                len(use.name) + len(json.dumps(dict(use.input))) for use in reply.tool_uses
            )
            output_tokens = max(math.ceil(output_chars / CHARS_PER_TOKEN), 1)
        model = reply.model or body.get("model")
        return {
            "id": reply.id or self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model if isinstance(model, str) else "",
            "content": content,
            "stop_reason": reply.stop_reason or ("tool_use" if reply.tool_uses else "end_turn"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": reply.cache_write_tokens,
                "cache_read_input_tokens": reply.cache_read_tokens,
                "output_tokens": output_tokens,
            },
        }

    def _events(self, message: Mapping[str, Any]) -> Iterator[tuple[str | None, Any]]:
        yield "message_start", {"type": "message_start", "message": _started(message)}
        yield "ping", {"type": "ping"}
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                start: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": t} for t in _text_chunks(block["text"])]
            else:
                start = {**block, "input": {}}
                raw = json.dumps(block["input"]) if block["input"] else ""
                pieces = [raw[i : i + 12] for i in range(0, len(raw), 12)]
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *pieces]]
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
            for delta in deltas:
                yield (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                # Cumulative, as the real API sends it (input and cache counts too).
                "usage": dict(message["usage"]),
            },
        )
        yield "message_stop", {"type": "message_stop"}


def _started(message: Mapping[str, Any]) -> dict[str, Any]:
    """The ``message`` of ``message_start``: no content yet, one output token."""
    return {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }


def add_anthropic_routes(
    server: FakeServer, script: AnthropicScript = (), *, require_api_key: bool = True
) -> FakeAnthropicRoutes:
    """Serve ``POST /v1/messages`` on ``server`` from ``script``.

    ``script``: a list of replies used in order (a string is a text answer), or
    a function of the ``RecordedRequest`` returning one. Running out of listed
    replies answers a 400 saying so. Returns the route's state (``push``,
    ``requests``).
    """
    routes = FakeAnthropicRoutes(script, require_api_key=require_api_key)
    server.route("POST", "/v1/messages", routes.handle)
    return routes


class FakeAnthropic:
    """A fake Anthropic API for a test: ``with FakeAnthropic(["Hello!"]) as fake:``.

    ``fake.client()`` / ``fake.async_client()`` give SDK clients pointed at it
    (no retries unless asked); ``fake.url`` is its base URL; ``fake.requests``
    the JSON bodies it received; ``fake.push(...)`` queues more replies. Given
    a running ``server`` (shared by several fakes or tests), it adds its route
    there and leaves the server running on exit.
    """

    def __init__(
        self,
        script: AnthropicScript = (),
        *,
        require_api_key: bool = True,
        server: FakeServer | None = None,
    ) -> None:
        self._owns_server = server is None
        self.server = FakeServer() if server is None else server
        self.routes = add_anthropic_routes(self.server, script, require_api_key=require_api_key)
        self.api_key = FAKE_API_KEY

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def requests(self) -> list[Mapping[str, Any]]:
        return self.routes.requests

    def push(self, *items: ScriptItem) -> None:
        self.routes.push(*items)

    def client(self, **options: Any) -> anthropic.Anthropic:
        """An ``anthropic.Anthropic`` talking to this fake (``max_retries=0`` by default)."""
        import anthropic

        options.setdefault("max_retries", 0)
        return anthropic.Anthropic(api_key=self.api_key, base_url=self.url, **options)

    def async_client(self, **options: Any) -> anthropic.AsyncAnthropic:
        """An ``anthropic.AsyncAnthropic`` talking to this fake."""
        import anthropic

        options.setdefault("max_retries", 0)
        return anthropic.AsyncAnthropic(api_key=self.api_key, base_url=self.url, **options)

    def __enter__(self) -> FakeAnthropic:
        if self._owns_server:
            self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns_server:
            self.server.stop()
