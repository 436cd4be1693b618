"""The replay cassette: its file format, reading, validating and writing it.

This module owns everything about the file and nothing about answering calls
(that is ``replay``, which re-exports the public names here): the line format,
``fingerprint``, the response shape (``response_to_dict`` /
``response_from_dict``), validation with ``CassetteError``, the header, the
process-wide lock that keeps appended lines whole, and ``cassette_from_calls``.
Standard library only.

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
malformed raises ``CassetteError`` naming the file, the line and the field:
a line nested deeper than ``MAX_JSON_DEPTH`` or a token count over
``MAX_USAGE_COUNT`` included.
"""

from __future__ import annotations

import copy
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

from steptrace._redact import redact, redacted
from steptrace.errors import StepTraceError
from steptrace.llm._types import (
    MAX_JSON_DEPTH,
    MAX_USAGE_COUNT,
    LlmResponse,
    ToolCall,
    json_depth,
)

__all__ = [
    "CASSETTE_VERSION",
    "CassetteError",
    "Entry",
    "PathLike",
    "append_call",
    "canonical",
    "cassette_from_calls",
    "fingerprint",
    "load",
    "redacted",
    "response_from_dict",
    "response_to_dict",
    "start_cassette",
]

CASSETTE_VERSION = 1

_HEADER_KEY = "steptrace_cassette"
# Lone surrogates (possible in JSON-decoded text) survive the round trip.
_ENCODING, _ERRORS = "utf-8", "surrogatepass"
# One lock for every cassette write in the process: lines never interleave,
# even when two recorders share a file.
_WRITE_LOCK = threading.Lock()
_HEX = frozenset("0123456789abcdef")

PathLike = str | os.PathLike[str]


class CassetteError(StepTraceError, ValueError):
    """A cassette file or call record is malformed; the message names the file
    and line (or the call) and the field."""


# --- fingerprints and the response shape ---------------------------------------


def canonical(data: Any) -> str:
    """``data`` as canonical JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint(data: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON (sorted keys, no whitespace, ASCII) of
    ``data``, normally ``request.fingerprint_data()``."""
    return hashlib.sha256(canonical(data).encode("ascii")).hexdigest()


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
    if type(value) is int and value.bit_length() > 64:  # repr may refuse, and says little
        return f"int of {value.bit_length()} bits"
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
    if value > MAX_USAGE_COUNT:
        raise CassetteError(
            f"{where}.{key}: expected at most {MAX_USAGE_COUNT:,} tokens, got {_show(value)}"
        )
    return value


# --- reading and writing the file ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One recorded call as read from a cassette (``line`` is 1-based)."""

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
    too_deep = f"{where}: nested too deeply (over {MAX_JSON_DEPTH} levels)"
    try:
        data = json.loads(raw.decode(_ENCODING, _ERRORS))
    except UnicodeDecodeError as exc:
        raise CassetteError(f"{where}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise CassetteError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise CassetteError(too_deep) from None
    except ValueError as exc:  # an integer too long to convert
        raise CassetteError(f"{where}: not valid JSON ({str(exc)[:100]})") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise CassetteError(too_deep)
    return data


def _entry(data: object, number: int, where: str) -> Entry:
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
    return Entry(number, fp, fingerprint(request), request, response_to_dict(response))


def load(path: Path) -> list[Entry]:
    """Read and validate the whole cassette at ``path``: its recorded calls."""
    entries: list[Entry] = []
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


def start_cassette(path: Path, *, overwrite: bool) -> None:
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


def append_call(
    path: Path, fp: str, request: Mapping[str, Any], response: Mapping[str, Any]
) -> None:
    """Append one call line to the cassette at ``path``, under the write lock."""
    line = _call_line(fp, request, response)
    with _WRITE_LOCK, path.open("ab") as f:
        f.write(line)


# --- rebuilding a cassette ------------------------------------------------------


def cassette_from_calls(
    calls: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]], path: PathLike
) -> int:
    """Write a cassette at ``path`` from ``(request data, response data)`` pairs:
    request data as ``LlmRequest.fingerprint_data()`` gives it, response data as
    ``response_to_dict`` does. Returns the number of calls written.

    The file is replaced atomically, and only when every record is valid; a bad
    record raises ``CassetteError`` naming the call (1-based) and the field.
    Records whose request data was stored redacted still replay (see ``replay``
    on matching)."""
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
        lines.append(_call_line(fp, redacted(request), response_to_dict(response)))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(lines)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(lines) - 1
