"""Deterministic record and replay of provider calls: the ``replay`` provider.

This module owns the two providers over a cassette: ``RecordingProvider``
wraps a real provider and appends each call to a cassette, ``ReplayProvider``
answers requests from one offline, and ``ReplayMissing`` says when it cannot.
The cassette itself (its JSON Lines format, ``fingerprint``, the response
shape, validation and ``CassetteError``, ``cassette_from_calls``) belongs to
``_cassette``, whose public names are re-exported here. Standard library only;
replay never opens a socket.

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
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steptrace.errors import StepTraceError
from steptrace.llm._types import LlmRequest, LlmResponse, Provider
from steptrace.llm.providers._cassette import (
    CASSETTE_VERSION,
    CassetteError,
    Entry,
    PathLike,
    append_call,
    canonical,
    cassette_from_calls,
    fingerprint,
    load,
    redacted,
    response_from_dict,
    response_to_dict,
    start_cassette,
)

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

_DIFF_MAX_LINES = 40
_DIFF_MAX_WIDTH = 240


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
        start_cassette(self.path, overwrite=overwrite)

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
        append_call(self.path, fp, safe, response_to_dict(response))


def _prepare(request: LlmRequest) -> tuple[str, dict[str, Any]]:
    data = request.fingerprint_data()
    return fingerprint(data), redacted(data)


class ReplayProvider:
    """Answers requests from the cassette at ``path``; never touches the network.

    Matching, repeats, ``strict_order`` and streaming are described in the module
    docstring. The cassette is read and validated once, here. Thread-safe.
    ``source`` is what errors call the recorded calls (default: the cassette's
    path; ``steptrace replay`` names the stored run, its cassette being temporary).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        name: str = "replay",
        strict_order: bool = False,
        source: str | None = None,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.source = str(self.path) if source is None else source
        self.strict_order = strict_order
        self._entries = load(self.path)
        self._queues: dict[str, list[Entry]] = {}
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

    def _match(self, request: LlmRequest) -> Entry:
        data = request.fingerprint_data()
        fp = fingerprint(data)
        with self._lock:
            if self.strict_order:
                return self._match_in_order(data, fp)
            key = fp if fp in self._queues else self._by_redacted.get(fingerprint(redacted(data)))
            if key is None:
                raise self._missing(redacted(data), fp)
            queue = self._queues[key]
            served = self._served.get(key, 0)
            self._served[key] = served + 1
            return queue[min(served, len(queue) - 1)]

    def _match_in_order(self, data: dict[str, Any], fp: str) -> Entry:
        if self._entries and self._next >= len(self._entries):
            raise ReplayMissing(
                f"no recorded response for this request (model {data.get('model')!r}): "
                f"all {len(self._entries)} call(s) recorded in {self.source} have been "
                "replayed (strict order)",
                fingerprint=fp,
                request=redacted(data),
            )
        if not self._entries:
            raise self._missing(redacted(data), fp)
        entry = self._entries[self._next]
        if fp != entry.fingerprint and (fingerprint(redacted(data)) != entry.redacted_fingerprint):
            raise self._missing(redacted(data), fp, expected=entry)
        self._next += 1
        return entry

    def _missing(
        self, safe: dict[str, Any], fp: str, expected: Entry | None = None
    ) -> ReplayMissing:
        head = (
            f"no recorded response for this request (model {safe.get('model')!r}, "
            f"fingerprint {fp[:12]}) in {self.source}"
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


def _closest(safe: Mapping[str, Any], entries: list[Entry]) -> tuple[Entry, float]:
    """The recorded request most like ``safe``: same model first, then the
    highest difflib ratio on the canonical JSON (first recorded wins ties)."""
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.fingerprint, entry)
    model = safe.get("model")
    pool = [e for e in unique.values() if e.request.get("model") == model] or list(unique.values())
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(canonical(safe))
    best, best_score = pool[0], -1.0
    for entry in pool:
        matcher.set_seq1(canonical(entry.request))
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
