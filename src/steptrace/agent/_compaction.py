"""Compaction: keeping a long agent transcript inside the model's context window.

This module owns the compaction configuration (``Compaction``, with its token
threshold per model), the transcript's token estimate (``estimate_tokens``, the
same conservative offline rule as ``llm_call``'s pre-flight), the choice of what
to archive (``plan_compaction``), the deterministic summary of archived turns
(``deterministic_summary``) and the new working transcript (``compact`` and its
async twin ``acompact``, returning a ``CompactionResult``). It is pure logic:
the agent loop decides when to call it, supplies the LLM summarizer for the
``llm`` strategy, keeps the archived messages in the stored transcript and
emits the ``ContextCompaction`` event (``len(result.archived)``,
``len(result.summary)``).

The split, for a transcript over the threshold: the *head* is the leading
system message(s) plus the user message right after them (the task); the
*tail* is the last ``keep_last`` messages, moved back so that it never holds a
tool result without the assistant message that made the call; the *middle*,
everything between, is archived. The new transcript is head, one summary
message, tail. The summary message is a user message named
``steptrace_summary`` (``is_summary``): it sits right after the head, so the
next compaction archives it with the rest and ``deterministic_summary`` carries
its lines over.

Context windows: ``context_window`` when given, else a small table of model
families, deliberately on the low side (a smaller window only compacts earlier,
which also keeps each call's cost bounded): claude 200k, gpt-4o, gpt-4.1 and
the o-series 128k, anything else 128k.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .. import _json
from ..llm._call import (
    ESTIMATE_CHARS_PER_TOKEN,
    ESTIMATE_TOKENS_PER_MESSAGE,
    _json_chars,
    estimate_input_tokens,
)
from ..llm._types import LlmRequest, Message

__all__ = [
    "SUMMARY_NAME",
    "Compaction",
    "CompactionResult",
    "acompact",
    "compact",
    "deterministic_summary",
    "estimate_tokens",
    "is_summary",
    "known_context_window",
    "message_chars",
    "plan_compaction",
    "summary_message",
    "tokens_of",
]

SUMMARY_NAME = "steptrace_summary"
"""The ``name`` that marks a summary message in the working transcript."""

DEFAULT_CONTEXT_WINDOW = 128_000

_CONTEXT_WINDOWS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"claude"), 200_000),
    (re.compile(r"gpt-4o"), 128_000),
    (re.compile(r"gpt-4\.1"), 128_000),
    (re.compile(r"(?:^|[^a-z0-9])o\d"), 128_000),  # o1, o3-mini, openai:o4-mini
)

_SUMMARY_HEADER = "Summary of earlier work ({count} messages archived):\n"
_SUMMARY_HEADER_START = "Summary of earlier work ("
_TRUNCATED = "[... earlier part of the summary truncated]\n"
_TEXT_CHARS = 500
_ARGUMENT_CHARS = 200
_RESULT_CHARS = 200

Plan = tuple[list[Message], list[Message], list[Message]]


def _positive_int(field: str, value: object, owner: str = "Compaction") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {field} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}: {field} must be a positive int, got {value!r}")


def known_context_window(model: str) -> int:
    """The context window assumed for ``model`` (provider prefixes and dated
    versions allowed): from the family table, else 128,000."""
    name = model.lower()
    for pattern, window in _CONTEXT_WINDOWS:
        if pattern.search(name):
            return window
    return DEFAULT_CONTEXT_WINDOW


@dataclass(frozen=True, kw_only=True, slots=True)
class Compaction:
    """When and how to compact. The threshold is ``max_tokens`` when given, else
    ``fraction`` of the context window (``context_window``, or the model's from
    ``known_context_window``). ``keep_last`` messages at the end stay verbatim
    (more when a tool result needs its call). ``strategy`` tells the loop which
    summarizer to pass; ``summary_max_chars`` bounds every summary."""

    enabled: bool = True
    max_tokens: int | None = None
    fraction: float = 0.75
    context_window: int | None = None
    keep_last: int = 6
    strategy: Literal["deterministic", "llm"] = "deterministic"
    summary_max_chars: int = 2000

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TypeError(f"Compaction: enabled must be a bool, got {self.enabled!r}")
        if self.max_tokens is not None:
            _positive_int("max_tokens", self.max_tokens)
        fraction = self.fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"Compaction: fraction must be a number, got {fraction!r}")
        if not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise ValueError(f"Compaction: fraction must be in (0, 1], got {fraction!r}")
        if self.context_window is not None:
            _positive_int("context_window", self.context_window)
        keep_last = self.keep_last
        if isinstance(keep_last, bool) or not isinstance(keep_last, int):
            raise TypeError(f"Compaction: keep_last must be an int >= 0, got {keep_last!r}")
        if keep_last < 0:
            raise ValueError(f"Compaction: keep_last must be an int >= 0, got {keep_last!r}")
        if self.strategy not in ("deterministic", "llm"):
            raise ValueError(
                f"Compaction: strategy must be 'deterministic' or 'llm', got {self.strategy!r}"
            )
        _positive_int("summary_max_chars", self.summary_max_chars)

    def threshold(self, model: str) -> int:
        """The estimated token count above which a transcript for ``model`` is compacted."""
        if self.max_tokens is not None:
            return self.max_tokens
        window = self.context_window or known_context_window(model)
        return max(1, int(window * self.fraction))


@dataclass(frozen=True, kw_only=True, slots=True)
class CompactionResult:
    """The new working transcript, the messages it no longer holds (in order,
    an earlier summary message included) and the new summary (without header)."""

    messages: list[Message]
    archived: list[Message]
    summary: str


def estimate_tokens(messages: Sequence[Message]) -> int:
    """The transcript's prompt tokens by ``llm_call``'s estimate: ``ceil(chars / 3)``
    plus 4 a message, tool call names and arguments counted."""
    return estimate_input_tokens(LlmRequest(model="", messages=tuple(messages)))


def message_chars(message: Message) -> int:
    """The characters ``message`` adds to ``estimate_tokens``' count, so a loop can
    keep the count as its transcript grows instead of walking it every turn:
    ``estimate_tokens(ms) == tokens_of(sum(map(message_chars, ms)), len(ms))``."""
    chars = len(message.content)
    for call in message.tool_calls:
        chars += _json_chars(call)
    return chars


def tokens_of(chars: int, messages: int) -> int:
    """``estimate_tokens`` of ``messages`` messages holding ``chars`` characters."""
    return math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN) + ESTIMATE_TOKENS_PER_MESSAGE * messages


def is_summary(message: Message) -> bool:
    """Whether ``message`` is a summary that ``compact`` put in a transcript."""
    return message.name == SUMMARY_NAME and message.role == "user"


def summary_message(summary: str, archived_count: int) -> Message:
    """The message that stands for ``archived_count`` archived messages."""
    return Message(
        role="user",
        content=_SUMMARY_HEADER.format(count=archived_count) + summary,
        name=SUMMARY_NAME,
    )


def plan_compaction(
    messages: Sequence[Message], config: Compaction, model: str, *, tokens: int | None = None
) -> Plan | None:
    """``(head, middle, tail)`` with ``head + middle + tail == messages``, or None
    when compaction is off, the estimate is within the threshold, or the middle
    holds nothing but earlier summaries. ``tokens``: ``estimate_tokens(messages)``
    when the caller keeps it already."""
    if not config.enabled:
        return None
    if tokens is None:
        tokens = estimate_tokens(messages)
    if tokens <= config.threshold(model):
        return None
    n = len(messages)
    head_end = 0
    while head_end < n and messages[head_end].role == "system":
        head_end += 1
    if head_end < n and messages[head_end].role == "user" and not is_summary(messages[head_end]):
        head_end += 1
    tail_start = _tail_start(messages, head_end, max(head_end, n - config.keep_last))
    middle = list(messages[head_end:tail_start])
    if all(is_summary(m) for m in middle):  # also when empty
        return None
    return list(messages[:head_end]), middle, list(messages[tail_start:])


def _tail_start(messages: Sequence[Message], head_end: int, start: int) -> int:
    """Move ``start`` back until no tool result in the tail is cut off from its call."""
    calls = {
        call.id: index
        for index in range(head_end, start)
        for call in messages[index].tool_calls
        if messages[index].role == "assistant"
    }
    while True:
        while head_end < start < len(messages) and messages[start].role == "tool":
            start -= 1  # results follow their call: step back onto it
        earliest = min(
            (
                calls[m.tool_call_id]
                for m in messages[start:]
                if m.role == "tool" and m.tool_call_id in calls
            ),
            default=start,
        )
        if earliest >= start:
            return start
        start = earliest  # a result separated from its call by other messages


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


_sorted_dumps = _json.encoder(sort_keys=True, default=str)


def _arguments(call_arguments: object) -> str:
    try:
        text = _sorted_dumps(call_arguments)
    except (TypeError, ValueError):
        text = repr(call_arguments)
    return _one_line(text, _ARGUMENT_CHARS)


def _truncate(text: str, max_chars: int) -> str:
    """``text`` within ``max_chars``: the latest part kept, from a line start
    when there is one, after a marker."""
    if len(text) <= max_chars:
        return text
    room = max_chars - len(_TRUNCATED)
    if room <= 0:
        return _TRUNCATED[:max_chars]
    kept = text[-room:]
    if text[-room - 1] != "\n":
        newline = kept.find("\n")
        if 0 <= newline < len(kept) - 1:
            kept = kept[newline + 1 :]
    return _TRUNCATED + kept


def deterministic_summary(archived: Sequence[Message], max_chars: int) -> str:
    """A bullet list of the archived turns, in order: each text (one line, at
    most 500 characters), each tool call as ``- name(arguments) -> result`` with
    the first 200 characters of its result, and an earlier summary's lines as
    they were. Over ``max_chars`` the oldest lines go, behind a marker."""
    _positive_int("max_chars", max_chars, "deterministic_summary")
    results: dict[str, str] = {}
    called: set[str] = set()
    for message in archived:
        if message.role == "tool" and message.tool_call_id is not None:
            results.setdefault(message.tool_call_id, message.content)
        elif message.role == "assistant":
            called.update(call.id for call in message.tool_calls)
    lines: list[str] = []
    for message in archived:
        if is_summary(message):
            body = message.content
            if body.startswith(_SUMMARY_HEADER_START):
                body = body.partition("\n")[2]
            lines.extend(line for line in body.strip().splitlines() if line.strip())
        elif message.role == "tool":
            if message.tool_call_id not in called:
                lines.append(f"- tool result: {_one_line(message.content, _RESULT_CHARS)}")
        else:
            if message.content.strip():
                lines.append(f"- {message.role}: {_one_line(message.content, _TEXT_CHARS)}")
            for call in message.tool_calls:
                result = results.get(call.id)
                shown = "(no result)" if result is None else _one_line(result, _RESULT_CHARS)
                lines.append(f"- {call.name}({_arguments(dict(call.arguments))}) -> {shown}")
    return _truncate("\n".join(lines), max_chars)


def _finish(plan: Plan, summary: object, config: Compaction) -> CompactionResult:
    if not isinstance(summary, str):
        raise TypeError(f"compact: summarize must return a str, got {type(summary).__name__}")
    head, middle, tail = plan
    summary = _truncate(summary, config.summary_max_chars)
    return CompactionResult(
        messages=[*head, summary_message(summary, len(middle)), *tail],
        archived=middle,
        summary=summary,
    )


def compact(
    messages: Sequence[Message],
    config: Compaction,
    model: str,
    *,
    summarize: Callable[[Sequence[Message]], str] | None = None,
) -> CompactionResult | None:
    """Compact ``messages`` when they pass the threshold for ``model``, else None.

    The summary is ``summarize(archived)`` when given (the loop passes its LLM
    summarizer for the ``llm`` strategy), else ``deterministic_summary``; either
    is cut to ``config.summary_max_chars``.
    """
    plan = plan_compaction(messages, config, model)
    if plan is None:
        return None
    if summarize is None:
        return _finish(plan, deterministic_summary(plan[1], config.summary_max_chars), config)
    return _finish(plan, summarize(plan[1]), config)


async def acompact(
    messages: Sequence[Message],
    config: Compaction,
    model: str,
    *,
    summarize: Callable[[Sequence[Message]], Awaitable[str]] | None = None,
    tokens: int | None = None,
) -> CompactionResult | None:
    """``compact`` with an async summarizer (for the async loop's ``allm_call``);
    ``tokens`` as in ``plan_compaction``."""
    plan = plan_compaction(messages, config, model, tokens=tokens)
    if plan is None:
        return None
    if summarize is None:
        return _finish(plan, deterministic_summary(plan[1], config.summary_max_chars), config)
    return _finish(plan, await summarize(plan[1]), config)
