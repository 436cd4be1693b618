"""The scripted provider: deterministic, offline answers with realistic usage.

``ScriptedProvider`` answers each request from a list of replies, in order, or
from a function of the request. A reply is a ``Reply`` (text and/or tool calls,
optionally with the usage to report); a plain string, a list of ``ToolCall``,
an ``LlmResponse`` (used as is) or an exception instance (raised, to test
retries and errors) are accepted as shorthands. With ``schema_answers=True`` a
request that asks for an ``output_schema`` and finds the script used up is
answered with a valid instance of the schema, built from the schema alone (as
Pydantic AI's ``TestModel`` does). Token counts follow the usual ~4 characters
per token of English text, so budgets, prices and ledgers behave as they would
against a real model. It is what the demo and the tests run on; ``llm_call``
never picks it silently.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Union

from .._types import LlmRequest, LlmResponse, ToolCall
from ._schema_instance import schema_instance

__all__ = ["Reply", "ScriptItem", "ScriptedProvider", "count_tokens"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted model answer: ``Reply("text")``, ``Reply(tool_calls=[ToolCall(
    id="c1", name="search", arguments={"q": "x"})])``, or ``Reply.json(value)``
    for a structured-output answer.

    ``input_tokens`` and ``output_tokens`` default to the provider's estimates
    (~4 characters a token); ``finish_reason`` to ``tool_calls`` when there are
    tool calls, else ``stop``; ``model`` to the request's.
    """

    text: str = ""
    _: KW_ONLY
    tool_calls: Sequence[ToolCall] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    finish_reason: str | None = None
    model: str | None = None

    @classmethod
    def json(cls, value: Any, **fields: Any) -> Reply:
        """An answer whose text is ``value`` as JSON (an ``output_schema`` answer)."""
        return cls(json.dumps(value), **fields)


# What a script may hold: a Reply, or one of its shorthands.
ScriptItem = Union[Reply, str, list[ToolCall], LlmResponse, BaseException]  # noqa: UP007 - runtime alias

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3


def count_tokens(text: str) -> int:
    """The scripted provider's token count for a text: ~4 characters a token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _prompt_tokens(request: LlmRequest) -> int:
    total = 0
    for message in request.messages:
        total += TOKENS_PER_MESSAGE + count_tokens(message.content)
        for call in message.tool_calls:
            total += count_tokens(call.name) + count_tokens(json.dumps(dict(call.arguments)))
    for tool in request.tools:
        total += count_tokens(tool.name + tool.description + json.dumps(dict(tool.parameters)))
    return total


class ScriptedProvider:
    """Answers from a script. ``requests`` keeps every request received.

    ``ScriptedProvider([Reply("first answer"), Reply(tool_calls=[...]),
    RateLimited(...)])`` or ``ScriptedProvider(lambda request: Reply("echo: " +
    request.messages[-1].content))``. Running out of listed replies raises
    ``RuntimeError`` naming the call, except that with ``schema_answers=True`` a
    request carrying an ``output_schema`` is then answered with a valid instance
    of it (``ScriptedProvider(schema_answers=True)`` answers every schema
    request that way).
    """

    def __init__(
        self,
        replies: Sequence[ScriptItem] | Callable[[LlmRequest], ScriptItem] = (),
        *,
        name: str = "scripted",
        schema_answers: bool = False,
    ) -> None:
        if not callable(replies) and not isinstance(replies, Sequence):
            raise TypeError(
                "ScriptedProvider: replies must be a list or a function of the request, "
                f"got {type(replies).__name__}"
            )
        if not isinstance(schema_answers, bool):
            raise TypeError(
                f"ScriptedProvider: schema_answers must be a bool, got {schema_answers!r}"
            )
        self.name = name
        self._replies = replies
        self._schema_answers = schema_answers
        self._next = 0
        self._lock = threading.Lock()
        self.requests: list[LlmRequest] = []

    def _reply_for(self, request: LlmRequest) -> ScriptItem:
        with self._lock:
            self.requests.append(request)
            if callable(self._replies):
                return self._replies(request)
            if self._next >= len(self._replies):
                if self._schema_answers and request.response_schema is not None:
                    return Reply.json(schema_instance(request.response_schema["schema"]))
                raise RuntimeError(
                    f"ScriptedProvider {self.name!r} ran out of replies: call "
                    f"{self._next + 1} but only {len(self._replies)} scripted"
                )
            reply = self._replies[self._next]
            self._next += 1
            return reply

    def complete(self, request: LlmRequest) -> LlmResponse:
        item = self._reply_for(request)
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, LlmResponse):
            response = item
        else:
            reply = _as_reply(item)
            calls = tuple(reply.tool_calls)
            output = count_tokens(reply.text) + sum(
                count_tokens(c.name) + count_tokens(json.dumps(dict(c.arguments))) for c in calls
            )
            response = LlmResponse(
                text=reply.text,
                model=reply.model or request.model,
                input_tokens=(
                    _prompt_tokens(request) if reply.input_tokens is None else reply.input_tokens
                ),
                output_tokens=max(output, 1)
                if reply.output_tokens is None
                else reply.output_tokens,
                tool_calls=calls,
                cache_read_tokens=reply.cache_read_tokens,
                response_id=f"scripted-{len(self.requests)}",
                finish_reason=reply.finish_reason or ("tool_calls" if calls else "stop"),
            )
        if request.stream and request.on_text is not None and response.text:
            for start in range(0, len(response.text), 16):
                request.on_text(response.text[start : start + 16])
        return response

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        return self.complete(request)


def _as_reply(item: object) -> Reply:
    if isinstance(item, Reply):
        return item
    if isinstance(item, str):
        return Reply(item)
    if isinstance(item, list) and all(isinstance(call, ToolCall) for call in item):
        return Reply(tool_calls=item)
    raise TypeError(
        "ScriptedProvider: a reply must be a Reply, a string, a list of ToolCall, an "
        f"LlmResponse or an exception, got {type(item).__name__}"
    )
