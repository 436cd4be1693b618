"""Deterministic record and replay of provider calls: the ``replay`` provider.

This module owns the cassette: its file format, writing it
(``RecordingProvider`` wraps a real provider; ``cassette_from_calls`` rebuilds
one from stored call records) and answering requests from it offline
(``ReplayProvider``). Standard library only; replay never opens a socket.

Cassette format (JSON Lines, UTF-8, one JSON object per line, keys sorted)::

    {"created":"2025-05-01T12:00:00+00:00","steptrace_cassette":1}
    {"fingerprint":"9f86d0...","request":{...},"response":{...}}

The first line is the header; ``steptrace_cassette`` is the format version.
Every further line is one call:

``fingerprint``
    sha256 (hex) of the canonical JSON of ``LlmRequest.fingerprint_data()``:
    keys sorted, no whitespace, non-ASCII escaped (``fingerprint()``). Taken
    before redaction, so a request matches its recording exactly.
``request``
    That fingerprint data with every string passed through ``redact``, so
    credentials never reach the file. It is there to be read and diffed.
``response``
    The ``LlmResponse`` as a dict (``response_to_dict``): ``text``, ``model``,
    ``input_tokens``, ``output_tokens``, ``tool_calls`` (each ``id``, ``name``,
    ``arguments``, ``raw_arguments``), ``cache_read_tokens``,
    ``cache_write_tokens``, ``reasoning_tokens``, ``response_id``,
    ``finish_reason``.

Blank lines and unknown keys are ignored when reading; anything else that is
malformed raises ``CassetteError`` naming the file, the line and the field.

Replay matching: a request is answered from the recorded calls with the same
fingerprint. When none has it (a credential in the prompt differed, or the
cassette was rebuilt from already-redacted records), a recorded call whose
redacted request equals the redacted request is used instead. Identical
requests recorded several times are answered in recorded order; once that
queue is used up, the last answer repeats (an agent that retries a step gets
the same answer it got last). With ``strict_order=True`` the calls must come in
exactly the recorded order instead, and each recorded call is answered once.
A request with no match raises ``ReplayMissing`` showing the closest recorded
request and a diff. A streaming request is answered by calling ``on_text``
once with the whole text (not at all when the text is empty).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steptrace.errors import StepTraceError
from steptrace.llm._redact import redact
from steptrace.llm._types import LlmRequest, LlmResponse, Provider, ToolCall

__all__ = [
    "CASSETTE_VERSION",
    "CassetteError",
    "RecordingProvider",
    "ReplayMissing",
    "ReplayProvider",
    "cassette_from_calls",
    "fingerprint",
    "response_from_dict",
    "response_to_dict",
]

CASSETTE_VERSION = 1

_HEADER_KEY = "steptrace_cassette"
# Lone surrogates (possible in JSON-decoded text) survive the round trip.
_ENCODING, _ERRORS = "utf-8", "surrogatepass"
# One lock for every cassette write in the process: lines never interleave,
# even when two recorders share a file.
_WRITE_LOCK = threading.Lock()
_DIFF_MAX_LINES = 40
_DIFF_MAX_WIDTH = 240
_HEX = frozenset("0123456789abcdef")

PathLike = str | os.PathLike[str]


class CassetteError(StepTraceError, ValueError):
    """A cassette file or call record is malformed; the message names the file
    and line (or the call) and the field."""


class ReplayMissing(StepTraceError):
    """No recorded call answers a request.

    ``request`` is the (redacted) request, ``closest`` the recorded request
    most like it (or None when the cassette is empty), ``closest_line`` its line
    in the cassette and ``diff`` a unified diff from it to the request."""

    def __init__(
        self,
        message: str,
        *,
        fingerprint: str = "",
        request: Mapping[str, Any] | None = None,
        closest: Mapping[str, Any] | None = None,
        closest_line: int | None = None,
        diff: str = "",
    ) -> None:
        self.fingerprint = fingerprint
        self.request = request
        self.closest = closest
        self.closest_line = closest_line
        self.diff = diff
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: rebuild from the message, then restore them.
        return (type(self), (str(self),), dict(self.__dict__))


# --- fingerprints and the response shape ---------------------------------------


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint(data: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON (sorted keys, no whitespace, ASCII) of
    ``data``, normally ``request.fingerprint_data()``."""
    return hashlib.sha256(_canonical(data).encode("ascii")).hexdigest()


def response_to_dict(response: LlmResponse) -> dict[str, Any]:
    """``response`` as plain JSON-ready data (the cassette's ``response``)."""
    return {
        "text": response.text,
        "model": response.model,
        "input_tokens": response.input_tokens,
        "output_tokens": response.output_tokens,
        "tool_calls": [
            {
                "id": c.id,
                "name": c.name,
                "arguments": dict(c.arguments),
                "raw_arguments": c.raw_arguments,
            }
            for c in response.tool_calls
        ],
        "cache_read_tokens": response.cache_read_tokens,
        "cache_write_tokens": response.cache_write_tokens,
        "reasoning_tokens": response.reasoning_tokens,
        "response_id": response.response_id,
        "finish_reason": response.finish_reason,
    }


def response_from_dict(data: object, *, where: str = "response") -> LlmResponse:
    """The ``LlmResponse`` in ``data`` (the shape ``response_to_dict`` gives).

    Raises ``CassetteError`` naming ``where`` and the field, e.g.
    ``run.jsonl line 3: response.input_tokens: expected a non-negative integer``.
    Optional fields may be absent; unknown keys are ignored."""
    obj = _object(data, where)
    raw_calls = obj.get("tool_calls", [])
    if not isinstance(raw_calls, list):
        raise CassetteError(f"{where}.tool_calls: expected a list, got {_show(raw_calls)}")
    return LlmResponse(
        text=_string(obj, "text", where),
        model=_string(obj, "model", where),
        input_tokens=_count(obj, "input_tokens", where, required=True),
        output_tokens=_count(obj, "output_tokens", where, required=True),
        tool_calls=tuple(
            _tool_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(raw_calls)
        ),
        cache_read_tokens=_count(obj, "cache_read_tokens", where),
        cache_write_tokens=_count(obj, "cache_write_tokens", where),
        reasoning_tokens=_count(obj, "reasoning_tokens", where),
        response_id=_optional_string(obj, "response_id", where),
        finish_reason=_optional_string(obj, "finish_reason", where),
    )


def _tool_call(data: object, where: str) -> ToolCall:
    obj = _object(data, where)
    arguments = obj.get("arguments", {})
    if not isinstance(arguments, dict):
        raise CassetteError(f"{where}.arguments: expected an object, got {_show(arguments)}")
    raw = obj.get("raw_arguments", "")
    if not isinstance(raw, str):
        raise CassetteError(f"{where}.raw_arguments: expected a string, got {_show(raw)}")
    return ToolCall(
        id=_string(obj, "id", where),
        name=_string(obj, "name", where),
        arguments=copy.deepcopy(arguments),  # every answer owns its arguments
        raw_arguments=raw,
    )


def _show(value: object) -> str:
    text = redact(repr(value))
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _object(data: object, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise CassetteError(f"{where}: expected an object, got {_show(data)}")
    return data


def _string(obj: Mapping[str, Any], key: str, where: str) -> str:
    if key not in obj:
        raise CassetteError(f"{where}.{key}: missing")
    value = obj[key]
    if not isinstance(value, str):
        raise CassetteError(f"{where}.{key}: expected a string, got {_show(value)}")
    return value


def _optional_string(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise CassetteError(f"{where}.{key}: expected a string or null, got {_show(value)}")
    return value


def _count(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> int:
    if key not in obj and required:
        raise CassetteError(f"{where}.{key}: missing")
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CassetteError(f"{where}.{key}: expected a non-negative integer, got {_show(value)}")
    return value


def _redacted(value: Any) -> Any:
    """``value`` with every string (dict keys included) passed through ``redact``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {(redact(k) if isinstance(k, str) else k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


# --- reading and writing the file ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    line: int
    fingerprint: str
    redacted_fingerprint: str
    """Fingerprint of the stored (redacted) request: the fallback match."""
    request: dict[str, Any]
    response: dict[str, Any]


def _line(data: Mapping[str, Any]) -> bytes:
    text = json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return (text + "\n").encode(_ENCODING, _ERRORS)


def _header() -> bytes:
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return _line({_HEADER_KEY: CASSETTE_VERSION, "created": created})


def _call_line(fp: str, request: Mapping[str, Any], response: Mapping[str, Any]) -> bytes:
    return _line({"fingerprint": fp, "request": request, "response": response})


def _plain(value: object) -> object:
    return dict(value) if isinstance(value, Mapping) and not isinstance(value, dict) else value


def _check_header(data: object, where: str) -> None:
    version = data.get(_HEADER_KEY) if isinstance(data, dict) else None
    if isinstance(version, bool) or not isinstance(version, int):
        raise CassetteError(
            f'{where}: not a steptrace cassette header (expected {{"{_HEADER_KEY}": '
            f'{CASSETTE_VERSION}, "created": ...}} on the first line)'
        )
    if version != CASSETTE_VERSION:
        raise CassetteError(
            f"{where}: cassette format {version} is not supported "
            f"(this steptrace reads format {CASSETTE_VERSION})"
        )


def _check_request(data: object, where: str) -> dict[str, Any]:
    obj = _object(data, where)
    _string(obj, "model", where)
    if not isinstance(obj.get("messages"), list):
        raise CassetteError(f"{where}.messages: expected a list, got {_show(obj.get('messages'))}")
    return obj


def _parse_line(raw: bytes, where: str) -> object:
    try:
        return json.loads(raw.decode(_ENCODING, _ERRORS))
    except UnicodeDecodeError as exc:
        raise CassetteError(f"{where}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise CassetteError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None


def _entry(data: object, number: int, where: str) -> _Entry:
    obj = _object(data, where)
    fp = obj.get("fingerprint")
    if not isinstance(fp, str) or len(fp) != 64 or not _HEX.issuperset(fp):
        raise CassetteError(
            f"{where}: fingerprint: expected 64 lowercase hex digits, got {_show(fp)}"
        )
    if "request" not in obj:
        raise CassetteError(f"{where}: request: missing")
    if "response" not in obj:
        raise CassetteError(f"{where}: response: missing")
    request = _check_request(obj["request"], f"{where}: request")
    response = response_from_dict(obj["response"], where=f"{where}: response")
    return _Entry(number, fp, fingerprint(request), request, response_to_dict(response))


def _load(path: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    header_seen = False
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path} line {number}"
        data = _parse_line(raw, where)
        if header_seen:
            entries.append(_entry(data, number, where))
        else:
            _check_header(data, where)
            header_seen = True
    if not header_seen:
        raise CassetteError(f"{path}: empty file, not a steptrace cassette (no header line)")
    return entries


def _start_cassette(path: Path, *, overwrite: bool) -> None:
    """Write the header to a new or empty file, or check an existing cassette."""
    with _WRITE_LOCK:
        size = path.stat().st_size if path.exists() else 0
        if size and not overwrite:
            with path.open("rb") as f:
                first = f.readline()
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
            _check_header(_parse_line(first, f"{path} line 1"), f"{path} line 1")
            if last != b"\n":
                raise CassetteError(
                    f"{path}: ends in an incomplete line (an interrupted write?); "
                    "fix or remove that line before recording into it"
                )
            return
        with path.open("wb") as f:
            f.write(_header())


# --- providers ------------------------------------------------------------------


class RecordingProvider:
    """Forwards every call to ``inner`` and appends it to the cassette at ``path``.

    A new or empty file gets a header; an existing cassette is appended to (so
    several recorders may share one file), unless ``overwrite`` starts it afresh.
    Each call is one line, written and flushed to the OS as soon as the response
    arrives, under a process-wide lock: a crash loses only calls still in flight.
    A failed call (the inner provider raised) is not recorded. ``name`` defaults
    to the inner provider's, so accounting shows the real provider. The write
    is a small blocking append, also from ``acomplete``.
    """

    def __init__(
        self,
        inner: Provider,
        path: PathLike,
        *,
        name: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.inner = inner
        self.path = Path(path)
        self.name: str = inner.name if name is None else name
        _start_cassette(self.path, overwrite=overwrite)

    def complete(self, request: LlmRequest) -> LlmResponse:
        # Fingerprint first: a request that cannot be recorded is refused before
        # it costs anything.
        fp, safe = _prepare(request)
        response = self.inner.complete(request)
        self._append(fp, safe, response)
        return response

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        fp, safe = _prepare(request)
        response = await self.inner.acomplete(request)
        self._append(fp, safe, response)
        return response

    def _append(self, fp: str, safe: Mapping[str, Any], response: LlmResponse) -> None:
        line = _call_line(fp, safe, response_to_dict(response))
        with _WRITE_LOCK, self.path.open("ab") as f:
            f.write(line)


def _prepare(request: LlmRequest) -> tuple[str, dict[str, Any]]:
    data = request.fingerprint_data()
    return fingerprint(data), _redacted(data)


class ReplayProvider:
    """Answers requests from the cassette at ``path``; never touches the network.

    Matching, repeats, ``strict_order`` and streaming are described in the module
    docstring. The cassette is read and validated once, here. Thread-safe.
    """

    def __init__(self, path: PathLike, *, name: str = "replay", strict_order: bool = False) -> None:
        self.name = name
        self.path = Path(path)
        self.strict_order = strict_order
        self._entries = _load(self.path)
        self._queues: dict[str, list[_Entry]] = {}
        self._by_redacted: dict[str, str] = {}
        for entry in self._entries:
            self._queues.setdefault(entry.fingerprint, []).append(entry)
            self._by_redacted.setdefault(entry.redacted_fingerprint, entry.fingerprint)
        self._served: dict[str, int] = {}
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The number of recorded calls."""
        return len(self._entries)

    @property
    def unplayed(self) -> tuple[int, ...]:
        """Cassette line numbers of the recorded calls not yet answered (sorted)."""
        with self._lock:
            if self.strict_order:
                return tuple(e.line for e in self._entries[self._next :])
            return tuple(
                sorted(
                    e.line
                    for fp, queue in self._queues.items()
                    for e in queue[self._served.get(fp, 0) :]
                )
            )

    def complete(self, request: LlmRequest) -> LlmResponse:
        entry = self._match(request)
        response = response_from_dict(entry.response, where=f"{self.path} line {entry.line}")
        if request.stream and request.on_text is not None and response.text:
            request.on_text(response.text)
        return response

    async def acomplete(self, request: LlmRequest) -> LlmResponse:
        return self.complete(request)

    def _match(self, request: LlmRequest) -> _Entry:
        data = request.fingerprint_data()
        fp = fingerprint(data)
        with self._lock:
            if self.strict_order:
                return self._match_in_order(data, fp)
            key = fp if fp in self._queues else self._by_redacted.get(fingerprint(_redacted(data)))
            if key is None:
                raise self._missing(_redacted(data), fp)
            queue = self._queues[key]
            served = self._served.get(key, 0)
            self._served[key] = served + 1
            return queue[min(served, len(queue) - 1)]

    def _match_in_order(self, data: dict[str, Any], fp: str) -> _Entry:
        if self._entries and self._next >= len(self._entries):
            raise ReplayMissing(
                f"no recorded response for this request (model {data.get('model')!r}): "
                f"all {len(self._entries)} call(s) recorded in {self.path} have been "
                "replayed (strict order)",
                fingerprint=fp,
                request=_redacted(data),
            )
        if not self._entries:
            raise self._missing(_redacted(data), fp)
        entry = self._entries[self._next]
        if fp != entry.fingerprint and (fingerprint(_redacted(data)) != entry.redacted_fingerprint):
            raise self._missing(_redacted(data), fp, expected=entry)
        self._next += 1
        return entry

    def _missing(
        self, safe: dict[str, Any], fp: str, expected: _Entry | None = None
    ) -> ReplayMissing:
        head = (
            f"no recorded response for this request (model {safe.get('model')!r}, "
            f"fingerprint {fp[:12]}) in {self.path}"
        )
        if not self._entries:
            return ReplayMissing(
                f"{head}: the cassette holds no calls", fingerprint=fp, request=safe
            )
        if expected is not None:
            closest = expected
            label = f"strict order expects the call recorded at line {closest.line}:"
        else:
            closest, score = _closest(safe, self._entries)
            label = f"closest recorded request: line {closest.line} (similarity {score:.2f}):"
        diff = _diff(closest.request, safe, closest.line)
        return ReplayMissing(
            f"{head}, which holds {len(self._entries)} call(s).\n{label}\n{diff}",
            fingerprint=fp,
            request=safe,
            closest=copy.deepcopy(closest.request),
            closest_line=closest.line,
            diff=diff,
        )


def _closest(safe: Mapping[str, Any], entries: list[_Entry]) -> tuple[_Entry, float]:
    """The recorded request most like ``safe``: same model first, then the
    highest difflib ratio on the canonical JSON (first recorded wins ties)."""
    unique: dict[str, _Entry] = {}
    for entry in entries:
        unique.setdefault(entry.fingerprint, entry)
    model = safe.get("model")
    pool = [e for e in unique.values() if e.request.get("model") == model] or list(unique.values())
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(_canonical(safe))
    best, best_score = pool[0], -1.0
    for entry in pool:
        matcher.set_seq1(_canonical(entry.request))
        if matcher.real_quick_ratio() <= best_score or matcher.quick_ratio() <= best_score:
            continue
        score = matcher.ratio()
        if score > best_score:
            best, best_score = entry, score
    return best, best_score


def _diff_view(value: Any) -> Any:
    """Multi-line strings as lists of lines, so a diff points at the changed line."""
    if isinstance(value, str) and "\n" in value:
        return value.split("\n")
    if isinstance(value, Mapping):
        return {k: _diff_view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_diff_view(v) for v in value]
    return value


def _diff(recorded: Mapping[str, Any], requested: Mapping[str, Any], line: int) -> str:
    def pretty(data: Mapping[str, Any]) -> list[str]:
        text = json.dumps(_diff_view(data), indent=2, sort_keys=True, ensure_ascii=False)
        return text.splitlines()

    lines = list(
        difflib.unified_diff(
            pretty(recorded),
            pretty(requested),
            fromfile=f"recorded (line {line})",
            tofile="requested",
            n=2,
            lineterm="",
        )
    )
    if not lines:
        return "(no visible difference: the requests differ only in redacted text)"
    shown = [
        text if len(text) <= _DIFF_MAX_WIDTH else text[: _DIFF_MAX_WIDTH - 3] + "..."
        for text in lines[:_DIFF_MAX_LINES]
    ]
    if len(lines) > _DIFF_MAX_LINES:
        shown.append(f"... ({len(lines) - _DIFF_MAX_LINES} more diff lines)")
    return "\n".join(shown)


# --- rebuilding a cassette ------------------------------------------------------


def cassette_from_calls(
    calls: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]], path: PathLike
) -> int:
    """Write a cassette at ``path`` from ``(request data, response data)`` pairs:
    request data as ``LlmRequest.fingerprint_data()`` gives it, response data as
    ``response_to_dict`` does. Returns the number of calls written.

    The file is replaced atomically, and only when every record is valid; a bad
    record raises ``CassetteError`` naming the call (1-based) and the field.
    Records whose request data was stored redacted still replay (see the module
    docstring on matching)."""
    target = Path(path)
    lines = [_header()]
    for number, (request_data, response_data) in enumerate(calls, start=1):
        where = f"call {number}"
        request = _check_request(_plain(request_data), f"{where}: request")
        response = response_from_dict(_plain(response_data), where=f"{where}: response")
        try:
            fp = fingerprint(request)
        except (TypeError, ValueError) as exc:
            raise CassetteError(f"{where}: request: not JSON data ({exc})") from None
        lines.append(_call_line(fp, _redacted(request), response_to_dict(response)))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(lines)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(lines) - 1
