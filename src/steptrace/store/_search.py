"""Search within one run: what it looks at, the store query, and what a match says.

A search finds text (case-insensitive for ASCII letters only) in the run's LLM
call prompts and responses (the stored transcripts: message text, tool
results, tool-call arguments), its spans' names, errors and metadata, its
agent events and its error. The store answers with one query per source, each
a ``LIKE`` over the stored text with a ``LIMIT`` (``sql_rows``, written in the
SQL both backends accept); a store of another kind is scanned in Python over
the same text (``scan_rows``), so both give the same rows. ``hits`` then reads
each row's JSON and reports where the text is: one ``SearchHit`` per matching
value, with its kind, the span or event that holds it, the value's path and a
short snippet around the match. A prompt carries the conversation so far, so
a prompt text is reported once, at the first call whose prompt holds it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._protocol import EventRow, StoredRun, TranscriptRow
from ._tables import dumps

__all__ = ["Rows", "SearchHit", "hits", "scan_rows", "sql_rows"]

_SNIPPET = 60
"""Characters kept on each side of a match."""

Runner = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class Rows:
    """What a source query returned: ``transcripts`` (span id, request JSON,
    response JSON) in call start order, ``spans`` (span id, name, kind,
    error, metadata JSON) in start order, ``events`` (seq, span id, data
    JSON) in order, and the run's error when it matches."""

    transcripts: list[tuple[int, str | None, str | None]]
    spans: list[tuple[int, str, str, str | None, str]]
    events: list[tuple[int, int | None, str]]
    run_error: str | None
    full: bool
    """Some source returned as many rows as it was allowed: there may be more."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One match: ``kind`` is ``prompt``, ``tool_result``, ``response``,
    ``tool_arguments``, ``error``, ``span`` or ``event``; ``span_id`` the span
    holding it (for prompts and responses, the LLM call's), ``seq`` the
    event's; ``path`` where in the value (``messages[2].content``)."""

    kind: str
    span_id: int | None
    seq: int | None
    path: str
    snippet: str


def _json_pattern(needle: str) -> str:
    """The ``LIKE`` pattern for the needle's text inside JSON."""
    text = json.dumps(_fold(needle))[1:-1]
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def sql_rows(run: Runner, run_id: str, needle: str, limit: int, find: str = "instr") -> Rows:
    """The matching rows of each source, by SQL (``?`` placeholders). ``find``
    is the dialect's function giving where a text is in another (SQLite's
    ``instr``, PostgreSQL's ``strpos``): plain text columns are searched with
    it, since SQLite's ``LIKE`` stops at a NUL character; JSON text (its NUL
    escaped) with ``LIKE``."""
    in_json = _json_pattern(needle)
    plain = _fold(needle)
    match = "LIKE ? ESCAPE '\\'"

    def has(column: str) -> str:
        return f"{find}(LOWER({column}), ?) > 0"

    transcripts = run(
        "SELECT t.span_id, t.request, t.response FROM transcripts t "
        "LEFT JOIN spans s ON s.run_id = t.run_id AND s.span_id = t.span_id "
        f"WHERE t.run_id = ? AND (LOWER(t.request) {match} OR LOWER(t.response) {match}) "
        "ORDER BY COALESCE(s.start_ns, 0), t.span_id LIMIT ?",
        (run_id, in_json, in_json, limit),
    )
    spans = run(
        "SELECT span_id, name, kind, error, metadata FROM spans WHERE run_id = ? AND "
        f"({has('name')} OR {has('error')} OR LOWER(metadata) {match}) "
        "ORDER BY start_ns, span_id LIMIT ?",
        (run_id, plain, plain, in_json, limit),
    )
    events = run(
        f"SELECT seq, span_id, data FROM events WHERE run_id = ? AND LOWER(data) {match} "
        "ORDER BY seq LIMIT ?",
        (run_id, in_json, limit),
    )
    error = run(f"SELECT error FROM runs WHERE id = ? AND {has('error')}", (run_id, plain))
    return Rows(
        [(int(a), b, c) for a, b, c in transcripts],
        [(int(a), b, c, d, e) for a, b, c, d, e in spans],
        [(int(a), None if b is None else int(b), c) for a, b, c in events],
        error[0][0] if error else None,
        max(len(transcripts), len(spans), len(events)) >= limit,
    )


def scan_rows(
    stored: StoredRun,
    transcripts: Sequence[TranscriptRow],
    events: Sequence[EventRow],
    needle: str,
    limit: int,
) -> Rows:
    """The same rows as ``sql_rows``, found in Python over a loaded run."""
    lowered = _fold(needle)
    in_json = json.dumps(lowered)[1:-1]
    start = {s.span_id: (s.start_ns, s.span_id) for s in stored.spans}

    def text(value: Any) -> str | None:
        return None if value is None else dumps(value)

    found_t = []
    for t in sorted(transcripts, key=lambda t: start.get(t.span_id, (0, t.span_id))):
        request, response = text(t.request), text(t.response)
        if any(v is not None and in_json in _fold(v) for v in (request, response)):
            found_t.append((t.span_id, request, response))
    found_s = []
    for span in sorted(stored.spans, key=lambda s: (s.start_ns, s.span_id)):
        meta = dumps(span.metadata)
        if (
            lowered in _fold(span.name)
            or (span.error is not None and lowered in _fold(span.error))
            or in_json in _fold(meta)
        ):
            found_s.append((span.span_id, span.name, span.kind, span.error, meta))
    found_e = []
    for row in events:
        data = dumps(row.data)
        if in_json in _fold(data):
            found_e.append((row.seq, row.span_id, data))
    run = stored.run
    error = run.error if run.error is not None and lowered in _fold(run.error) else None
    return Rows(
        found_t[:limit],
        found_s[:limit],
        found_e[:limit],
        error,
        max(len(found_t), len(found_s), len(found_e)) >= limit,
    )


def hits(rows: Rows, needle: str, limit: int) -> list[SearchHit]:
    """Where ``needle`` is in each row: at most ``limit`` hits."""
    lowered = _fold(needle)
    out: list[SearchHit] = []
    seen_prompts: set[tuple[str, str]] = set()
    if rows.run_error is not None and lowered in _fold(rows.run_error):
        out.append(SearchHit("error", None, None, "run.error", _snippet(rows.run_error, lowered)))
    for span_id, request, response in rows.transcripts:
        asked = _loads(request)
        for path, value in _strings(asked, ""):
            if lowered in _fold(value):
                snippet = _snippet(value, lowered)
                if (path, snippet) in seen_prompts:
                    continue
                seen_prompts.add((path, snippet))
                kind = _prompt_kind(asked, path)
                out.append(SearchHit(kind, span_id, None, "request." + path, snippet))
        for path, value in _strings(_loads(response), ""):
            if lowered in _fold(value):
                kind = "tool_arguments" if path.startswith("tool_calls") else "response"
                out.append(
                    SearchHit(kind, span_id, None, "response." + path, _snippet(value, lowered))
                )
    for span_id, name, kind, error, metadata in rows.spans:
        if lowered in _fold(name):
            out.append(SearchHit("span", span_id, None, "name", _snippet(name, lowered)))
        if error is not None and lowered in _fold(error):
            out.append(SearchHit("error", span_id, None, f"{kind}.error", _snippet(error, lowered)))
        for path, value in _strings(_loads(metadata), ""):
            if lowered in _fold(value):
                out.append(SearchHit("span", span_id, None, path, _snippet(value, lowered)))
    for seq, emitted_in, data in rows.events:
        for path, value in _strings(_loads(data), ""):
            if path != "type" and lowered in _fold(value):
                kind = "error" if path == "reason" else "event"
                out.append(SearchHit(kind, emitted_in, seq, path, _snippet(value, lowered)))
    return out[:limit]


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(text: str) -> str:
    """``text`` with ASCII letters in lower case, as SQL's ``LOWER`` has it in
    SQLite (the one case folding both backends agree on)."""
    return text.translate(_ASCII_LOWER)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value (keys of objects too), with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(item, dict | list):
                yield from _strings(item, inner)
            elif isinstance(item, str):
                yield inner, item
            elif item is not None and not isinstance(item, bool):
                yield inner, str(item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def _prompt_kind(request: Any, path: str) -> str:
    """``tool_arguments`` inside a message's tool calls, ``tool_result`` in a
    tool message, else ``prompt``."""
    if ".tool_calls[" in path:
        return "tool_arguments"
    if path.startswith("messages[") and isinstance(request, dict):
        index = path[len("messages[") : path.index("]")]
        messages = request.get("messages")
        if index.isdigit() and isinstance(messages, list) and int(index) < len(messages):
            message = messages[int(index)]
            if isinstance(message, dict) and message.get("role") == "tool":
                return "tool_result"
    return "prompt"


def _snippet(text: str, lowered: str) -> str:
    at = _fold(text).find(lowered)
    if at < 0:
        return text[: 2 * _SNIPPET]
    start, end = max(0, at - _SNIPPET), min(len(text), at + len(lowered) + _SNIPPET)
    body = " ".join(text[start:end].split())
    return ("…" if start else "") + body + ("…" if end < len(text) else "")
