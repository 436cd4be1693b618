"""The scripted provider: deterministic, offline answers with realistic usage.

``ScriptedProvider`` answers each request from a list of replies, in order, or
from a function of the request. A reply is a string (the text), a list of
``ToolCall`` (the model asks for tools), an ``LlmResponse`` (used as is), or an
exception instance (raised, to test retries and errors). Token counts follow
the usual ~4 characters per token of English text, so budgets, prices and
ledgers behave as they would against a real model. It is what the demo and the
tests run on; ``llm_call`` never picks it silently.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from typing import Union

from .._types import LlmRequest, LlmResponse, ToolCall

__all__ = ["Reply", "ScriptedProvider", "count_tokens"]

Reply = Union[str, list[ToolCall], LlmResponse, BaseException]  # noqa: UP007 - runtime alias

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

    ``ScriptedProvider(["first answer", [ToolCall(...)], RateLimited(...)])`` or
    ``ScriptedProvider(lambda request: "echo: " + request.messages[-1].content)``.
    Running out of listed replies raises ``RuntimeError`` naming the call.
    """

    def __init__(
        self,
        replies: Sequence[Reply] | Callable[[LlmRequest], Reply],
        *,
        name: str = "scripted",
    ) -> None:
        if not callable(replies) and not isinstance(replies, Sequence):
            raise TypeError(
                "ScriptedProvider: replies must be a list or a function of the request, "
                f"got {type(replies).__name__}"
            )
        self.name = name
        self._replies = replies
        self._next = 0
        self._lock = threading.Lock()
        self.requests: list[LlmRequest] = []

    def _reply_for(self, request: LlmRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if callable(self._replies):
                return self._replies(request)
            if self._next >= len(self._replies):
                raise RuntimeError(
                    f"ScriptedProvider {self.name!r} ran out of replies: call "
                    f"{self._next + 1} but only {len(self._replies)} scripted"
                )
            reply = self._replies[self._next]
            self._next += 1
            return reply

    def complete(self, request: LlmRequest) -> LlmResponse:
        reply = self._reply_for(request)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, LlmResponse):
            response = reply
        else:
            n = len(self.requests)
            text = reply if isinstance(reply, str) else ""
            calls = tuple(reply) if isinstance(reply, list) else ()
            output = count_tokens(text) + sum(
                count_tokens(c.name) + count_tokens(json.dumps(dict(c.arguments))) for c in calls
            )
            response = LlmResponse(
                text=text,
                model=request.model,
                input_tokens=_prompt_tokens(request),
                output_tokens=max(output, 1),
                tool_calls=calls,
                response_id=f"scripted-{n}",
                finish_reason="tool_calls" if calls else "stop",
            )
        if request.stream and request.on_text is not None and response.text:
            for start in range(0, len(response.text), 16):
                request.on_text(response.text[start : start + 16])
        return response

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        return self.complete(request)
