"""The background writer: live runs into a ``RunStore``, off the run's hot path.

``StoreWriter`` is a steptrace ``SpanProcessor``. Its callbacks run on the
run's own threads, so they do the least possible: append the ended span (or
the run's start, or an LLM request's content) to an inbox, a ``deque`` whose
``append`` is atomic and takes no lock. A daemon thread wakes every
``interval`` seconds (or at once when someone flushes), empties the inbox and
turns it into rows, writing them in batched transactions of at most
``max_batch`` records. What is recorded, per run:

- the run row at the root's start (``running``, with this process's pid and
  host), at its end (status, error, totals from ``run.usage()``), and when
  the writer first sees a run it joined mid-way; never for a continuation
  (``steptrace.extract`` in a worker), whose spans, events, steps and calls
  go under the run, numbered from its ``record_seq_base``, while the run's
  header stays the opener's;
- every span when it ends, with its frame facts (``span_context``);
- the run's new agent events, completed steps and LLM trace entries, read by
  the writer thread through the run's cursors (``EventCursor``,
  ``StepCursor``, ``TraceCursor``: absolute positions, each length read once
  under the run's lock), each time it handles one of the run's spans;
- a run's rows again when usage arrives after its scope ended (``on_amend``):
  the amended ledger row, the late call, and the run's header when it had
  already ended;
- each ``llm_call`` request's content (``on_transcript``), redacted, or only
  its place when ``capture_content`` is off;
- while a run is open, a heartbeat every ``heartbeat_interval`` seconds, so a
  store opened after this process died can tell the run was ``interrupted``.

Default runs (steps called outside any ``steptrace.run()``) never end and are
not recorded. At the run root's end the writer flushes, waiting at most
``run_end_timeout`` seconds; it also flushes at interpreter exit (``atexit``).
Nothing reaches the run: a full inbox drops the record (counted in
``dropped``, logged once), a failed batch is rolled back by the store, counted
in ``failures`` and logged (the first with its traceback).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import _config
from .._context import Frame
from .._redact import redacted
from .._run import EventCursor, StepCursor, TraceCursor, active_frame, ledger_row
from .._span_context import span_context
from ..spans import SpanKind, remove_span_processor
from ._isolation import Rejection, write_isolated
from ._liveness import HEARTBEAT_INTERVAL, this_host
from ._protocol import (
    EventRow,
    LlmCallRow,
    RunRow,
    RunStore,
    SpanRow,
    StepRow,
    TranscriptRow,
    WriteBatch,
)

if TYPE_CHECKING:
    from .._run import Run
    from ..spans import Span

__all__ = ["StoreWriter"]

logger = logging.getLogger("steptrace.store")

_STOP = object()

# Building rows is pure Python: without a pause a run thread waking from I/O
# waits up to the interpreter's switch interval (5 ms) for the GIL.
_YIELD_EVERY = 32

# Inbox items other than an ended span (appended as itself) are tuples:
_RUN_START = 0  # (_RUN_START, run, its cursor)
_TRANSCRIPT = 1  # (_TRANSCRIPT, run id, span id, content)
_AMENDED = 2  # (_AMENDED, run): rows changed after the fact (late usage)


class _Flush:
    """A marker in the inbox: set when the writer has handled all before it."""

    __slots__ = ("done", "failures")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.failures = 0


class _RunCursor:
    """How far the writer has read one run's event log, ledger and trace log."""

    __slots__ = ("call_seq", "event_seq", "events", "seq_base", "steps", "trace")

    def __init__(self, run: Run) -> None:
        self.events = EventCursor(run)
        # A continuation (steptrace.extract) numbers its rows from its own base,
        # so the parts of one run that several processes write never collide.
        self.seq_base = run.record_seq_base
        self.event_seq = self.seq_base
        """Events recorded so far: keeps counting when ``take_agent_trace()``
        swaps in fresh lists."""
        self.steps = StepCursor(run)
        self.trace = TraceCursor(run)
        self.call_seq = self.seq_base


class StoreWriter:
    """A ``SpanProcessor`` writing every run of this process to ``store``.

    Usually made by ``steptrace.store.record_runs()``; otherwise register it
    with ``steptrace.add_span_processor(writer)``, and ``close()`` it (after
    removing it) to flush and stop its thread; ``stop()`` does both and closes
    the store. ``queue_size`` bounds the records waiting to be written.
    ``capture_content=False`` stores no prompt or response text at all (only
    that a call had a transcript); the default stores it with credentials
    redacted.
    """

    def __init__(
        self,
        store: RunStore,
        *,
        capture_content: bool = True,
        queue_size: int = 100_000,
        interval: float = 0.1,
        max_batch: int = 2_000,
        run_end_timeout: float = 2.0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.store = store
        self.capture_content = capture_content
        self.interval = interval
        self.max_batch = max_batch
        self.run_end_timeout = run_end_timeout
        self.heartbeat_interval = heartbeat_interval
        self.queue_size = queue_size
        self._inbox: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._runs: weakref.WeakKeyDictionary[Run, _RunCursor] = weakref.WeakKeyDictionary()
        """Writer thread only: the runs seen, and how far each was read."""
        self._open_runs: dict[str, None] = {}
        """Writer thread only: runs started and not ended (for heartbeats)."""
        self._counts_lock = threading.Lock()
        self.dropped = 0
        """Records dropped because the inbox was full."""
        self.failures = 0
        """Batches (or callbacks) that failed; each logged, none reached a run."""
        self.written = 0
        """Records committed to the store."""
        self._closed = False
        self._inherited: RunStore | None = None
        self._thread = threading.Thread(
            target=self._drain, name="steptrace-store-writer", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)
        this = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _restart_in_child(this))

    def _restart_after_fork(self) -> None:
        """In a forked child: the writer thread did not survive the fork and the
        parent's connection must not be used (nor closed) here, so open the
        store anew and start a thread of this process's own. A store it cannot
        reopen stops the recording in the child, with a warning."""
        self._inherited = self.store  # kept, never closed: it is the parent's
        self._inbox = collections.deque()
        self._wake = threading.Event()
        self._counts_lock = threading.Lock()
        self._runs = weakref.WeakKeyDictionary()
        self._open_runs = {}
        reopened = _reopen(self.store)
        if reopened is None or self._closed:
            remove_span_processor(self)
            if not self._closed:
                logger.warning(
                    "steptrace: %r cannot be reopened in a forked process; its records "
                    "are not stored (call steptrace.store.record_runs() in the child)",
                    self.store,
                )
            return
        self.store = reopened
        self._thread = threading.Thread(
            target=self._drain, name="steptrace-store-writer", daemon=True
        )
        self._thread.start()

    # -- the SpanProcessor protocol (the run's threads) -----------------------------

    def on_start(self, span: Span) -> None:
        if span.kind is SpanKind.RUN:  # only a run's start is written at once
            run: Run | None = getattr(span, "run", None)
            if run is not None and span is run.root and not run.is_default:
                # The cursor is made here, on the run's thread, so the run's
                # retention keeps every record until the writer has read it;
                # a run that outpaces the writer that far waits for it.
                run.backpressure.append(self._catch_up)
                self._put((_RUN_START, run, _RunCursor(run)))

    def on_end(self, span: Span) -> None:
        # Called for every span of every run: one check, one append.
        run: Run | None = getattr(span, "run", None)
        if run is None or run.is_default:
            return
        inbox = self._inbox
        if len(inbox) < self.queue_size:
            inbox.append(span)
        else:
            self._put(span)  # counts the drop
        if span is run.root:
            self.flush(self.run_end_timeout)

    def _catch_up(self) -> None:
        if threading.current_thread() is not self._thread:
            self.flush(self.run_end_timeout * 15)

    def on_amend(self, root: Span) -> None:
        run: Run | None = getattr(root, "run", None)
        if run is not None and not run.is_default:
            self._put((_AMENDED, run))

    def on_transcript(
        self, span: Span, content: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
    ) -> None:
        if not active_frame().run.is_default:
            self._put((_TRANSCRIPT, span.run_id, span.span_id, content))

    def _put(self, item: Any) -> None:
        inbox = self._inbox
        if len(inbox) < self.queue_size:
            inbox.append(item)
            return
        with self._counts_lock:
            self.dropped += 1
            first = self.dropped == 1
        if first:
            logger.warning(
                "steptrace: run store inbox full (%d records); dropping records", self.queue_size
            )

    # -- flushing and closing -----------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every record put so far is written (at most ``timeout``
        seconds; ``0`` only asks the thread to write now). True when all were
        handled and no batch failed meanwhile."""
        if not self._thread.is_alive():
            return not self._inbox
        marker = _Flush()
        marker.failures = self.failures
        self._inbox.append(marker)
        self._wake.set()
        if timeout == 0:
            return False
        return marker.done.wait(timeout) and self.failures == marker.failures

    def stop(self, timeout: float = 5.0) -> None:
        """Unregister from span processors, flush, stop the thread, and close
        the store: the end of ``record_runs``."""
        remove_span_processor(self)
        self.close(timeout)
        self.store.close()

    def close(self, timeout: float = 5.0) -> None:
        """Flush, then stop the writer thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self.flush(timeout)
        self._inbox.append(_STOP)
        self._wake.set()
        self._thread.join(timeout)

    def _failed(
        self, where: str, exc: Exception | None, rejected: Sequence[Rejection] = ()
    ) -> None:
        """Count and log a failure: ``exc``, or rows the store refused (one
        warning a run, each row counted)."""
        with self._counts_lock:
            self.failures += max(1, len(rejected))
            first = self.failures == max(1, len(rejected))
        if exc is None:
            by_run: dict[str, list[Rejection]] = {}
            for rejection in rejected:
                by_run.setdefault(rejection.run_id, []).append(rejection)
            for run_id, rows in by_run.items():
                logger.warning(
                    "steptrace: run store refused %d row(s) of run %s, counted on the run "
                    "(write_errors); its other rows and other runs are stored. Last: %s",
                    len(rows),
                    run_id,
                    rows[-1].message(),
                    exc_info=rows[-1].error if first else None,
                )
            return
        if first:
            logger.warning("steptrace: run store %s failed", where, exc_info=exc)
        else:
            logger.debug("steptrace: run store %s failed: %r", where, exc)
        if _config.settings.strict and where.startswith("on_"):
            raise exc

    # -- the writer thread --------------------------------------------------------

    def _drain(self) -> None:
        inbox = self._inbox
        next_heartbeat = time.monotonic() + self.heartbeat_interval
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            while inbox:
                batch = WriteBatch()
                records = 0
                markers: list[_Flush] = []
                stop = False
                handled = 0
                while inbox and records < self.max_batch:
                    handled += 1
                    if not handled % _YIELD_EVERY:
                        time.sleep(0)  # let a waiting run thread have the GIL now
                    item = inbox.popleft()
                    if item is _STOP:
                        stop = True
                        break
                    if isinstance(item, _Flush):
                        markers.append(item)
                        continue
                    try:
                        records += self._add(batch, item)
                    except Exception as exc:
                        self._failed("building a row", exc)
                if records:
                    self._write(batch, records)
                for marker in markers:
                    marker.done.set()
                if stop:
                    return
            if time.monotonic() >= next_heartbeat:
                next_heartbeat = time.monotonic() + self.heartbeat_interval
                self._heartbeat()

    def _write(self, batch: WriteBatch, records: int) -> None:
        # A batch the store refuses for its data is written again run by run and
        # row by row (_isolation): only the rows at fault are lost, each counted
        # on its own run; any other failure loses the batch, as before.
        try:
            rejected = write_isolated(self.store, batch)
        except Exception as exc:
            self._failed("write", exc)
            return
        self.written += records - len(rejected)
        if rejected:
            self._failed("write", None, rejected)

    def _heartbeat(self) -> None:
        if not self._open_runs:
            return
        now = time.time()
        try:
            self.store.write(WriteBatch(heartbeats=[(run_id, now) for run_id in self._open_runs]))
        except Exception as exc:
            self._failed("heartbeat", exc)

    def _add(self, batch: WriteBatch, item: Any) -> int:
        """Add the rows ``item`` stands for to ``batch``; return how many."""
        if type(item) is tuple:
            if item[0] == _RUN_START:
                run: Run = item[1]
                self._cursor(run, batch, item[2])
                return 1
            if item[0] == _AMENDED:
                run = item[1]
                records = self._read_run(run, self._cursor(run, batch), batch)
                if run.ended_at is not None and not run.is_continuation:
                    batch.runs.append(_run_row(run, ended=True))
                    records += 1
                return records
            _, run_id, span_id, content = item
            request: dict[str, Any] | None = None
            response: dict[str, Any] | None = None
            if self.capture_content:
                request, response = redacted(content())
            batch.transcripts.append(
                TranscriptRow(run_id=run_id, span_id=span_id, request=request, response=response)
            )
            return 1
        span: Span = item
        run = span.run  # type: ignore[attr-defined]
        cursor = self._cursor(run, batch)
        batch.spans.append(_span_row(span))
        records = 1 + self._read_run(run, cursor, batch)
        if span is run.root and not run.is_continuation:
            self._open_runs.pop(run.id, None)
            batch.runs.append(_run_row(run, ended=True))
            records += 1
        return records

    def _cursor(self, run: Run, batch: WriteBatch, made: _RunCursor | None = None) -> _RunCursor:
        cursor = self._runs.get(run)
        if cursor is None:
            cursor = self._runs[run] = made or _RunCursor(run)
            if not run.is_continuation:  # the run's header is its opener's to write
                self._open_runs[run.id] = None
                batch.runs.append(_run_row(run, ended=False))
        return cursor

    def _read_run(self, run: Run, cursor: _RunCursor, batch: WriteBatch) -> int:
        """Add the run's events, ledger rows and trace entries not yet read;
        return how many."""
        run_id = run.id
        seq_base = cursor.seq_base
        records = 0
        for span_id, event in cursor.events.read():
            batch.events.append(
                EventRow(run_id=run_id, seq=cursor.event_seq, span_id=span_id, data=event.to_dict())
            )
            cursor.event_seq += 1
            records += 1
        for position, frame in cursor.steps.read():
            batch.steps.append(
                StepRow(run_id=run_id, seq=seq_base + position, data=ledger_row(frame).to_dict())
            )
            records += 1
        for entry in cursor.trace.read():
            batch.llm_calls.append(_call_row(run_id, cursor.call_seq, entry))
            cursor.call_seq += 1
            records += 1
        return records


def _restart_in_child(writer: weakref.ref[StoreWriter]) -> None:
    alive = writer()
    if alive is not None:
        alive._restart_after_fork()


def _reopen(store: RunStore) -> RunStore | None:
    """The same store opened anew in this process (after a fork), or None."""
    from ._postgres import PostgresStore  # deferred: each is only needed when forked
    from ._sqlite import SQLiteStore

    try:
        if type(store) is SQLiteStore:
            return SQLiteStore(store.path)
        if type(store) is PostgresStore:
            return PostgresStore(store._conninfo)
    except Exception as exc:
        logger.warning("steptrace: reopening %r after a fork failed: %s", store, exc)
    return None


def _span_row(span: Span) -> SpanRow:
    return SpanRow(
        run_id=span.run_id,
        span_id=span.span_id,
        parent_id=span.parent_id,
        name=span.name,
        kind=span.kind.value if isinstance(span.kind, SpanKind) else str(span.kind),
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        status=span.status,
        error=span.error,
        metadata=dict(span.metadata),
        context=span_context(span),
    )


def _call_row(run_id: str, seq: int, entry: tuple[Any, ...]) -> LlmCallRow:
    model, input_tokens, output_tokens, duration_ms, cost_usd, cache_tokens, frame, at, _ = entry
    assert isinstance(frame, Frame)
    step = frame.step
    persona = frame.persona
    return LlmCallRow(
        run_id=run_id,
        seq=seq,
        span_id=frame.span_id,
        step=None if step is None else step.name,
        persona=None if persona is None else persona.name,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_tokens=cache_tokens,
        cost_usd=cost_usd,
        duration_ms=duration_ms,
        at=at,
    )


def _run_row(run: Run, *, ended: bool) -> RunRow:
    budget = None if run.budget is None else run.budget.to_dict()
    parent: dict[str, Any] = {k: getattr(run, k, None) for k in ("parent_run_id", "parent_span_id")}
    if not ended:
        return RunRow(
            id=run.id,
            name=run.name,
            status="running",
            started_at=run.started_at,
            metadata=dict(run.metadata),
            budget=budget,
            pid=os.getpid(),
            host=this_host(),
            heartbeat_at=time.time(),
            **parent,
        )
    usage = run.usage()
    return RunRow(
        id=run.id,
        name=run.name,
        status=run.status,
        started_at=run.started_at,
        ended_at=run.ended_at,
        error=run.error,
        metadata=dict(run.metadata),
        budget=budget,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
        llm_calls=usage.llm_calls,
        pid=os.getpid(),
        host=this_host(),
        heartbeat_at=run.ended_at,
        **parent,
    )
