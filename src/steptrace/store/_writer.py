"""The background writer: live runs into a ``RunStore``, off the run's hot path.

``StoreWriter`` is a steptrace ``SpanProcessor``. Its callbacks run on the
run's own threads, so they do the least possible: append the ended span (or
the run's start, or an LLM request's content) to an inbox, a ``deque`` whose
``append`` is atomic and takes no lock. A daemon thread wakes every
``interval`` seconds (or at once when someone flushes), empties the inbox and
turns it into rows, writing them in batched transactions of about
``max_batch`` inbox records and the run records read with them. What is
recorded, per run:

- the run row at the root's start (``running``, with this process's pid and
  host), at its end (status, error, totals from ``run.usage()``), and when
  the writer first sees a run it joined mid-way; never for a continuation
  (``steptrace.extract`` in a worker), whose spans, events, steps and calls
  go under the run, numbered from its ``record_seq_base``, while the run's
  header stays the opener's;
- every span when it ends, with its frame facts (``span_context``);
- the run's new agent events, completed steps and LLM trace entries, read by
  the writer thread through one ``RunReader`` a run (``_run_reader``: all
  three in one acquisition of the run's lock) after each batch of the run's
  spans, and on every wake for every run still open, so records made inside
  a long span are stored too;
- a run's rows again when usage arrives after its scope ended (``on_amend``):
  the amended ledger row, the late call, and the run's header when it had
  already ended;
- each ``llm_call`` request's content (``on_transcript``), redacted, or only
  its place when ``capture_content`` is off;
- while a run is open, a heartbeat every ``heartbeat_interval`` seconds, so a
  store opened after this process died can tell the run was ``interrupted``.

Rows for the SQL stores are encoded straight from the run's objects into
parameter tuples (``_encode``); any other ``RunStore`` gets row objects.

The writer is never more than about ``max_lag`` seconds (1 s) behind the run,
at any pace: it notes up to when everything is committed (``written_at``) and
how long a catch-up took per inbox item, and a span ending when the age of
the oldest unwritten record plus the time to write what waits passes
``max_lag`` makes the run's thread wait until the writer has caught up
(``_catch_up``, the wait retention's ``backpressure`` uses too). Nothing is
dropped for speed, and a process killed mid-run loses about the last
``max_lag`` seconds of its record. A store that does not answer within 30 s
is not waited for again for as long; meanwhile a full inbox drops records
(counted in ``dropped``, logged once).

Default runs (steps called outside any ``steptrace.run()``) never end and are
not recorded. At the run root's end the writer flushes, waiting at most
``run_end_timeout`` seconds; it also flushes at interpreter exit (``atexit``).
Nothing else reaches the run: a failed batch is rolled back by the store,
counted in ``failures`` and logged (the first with its traceback).
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
from .._redact import redacted
from .._run import active_frame
from .._run_reader import RunReader
from ..spans import SpanKind, remove_span_processor
from ._encode import EncodedBatch, add_encoded, add_rows, encodes
from ._isolation import Rejection, write_isolated
from ._liveness import HEARTBEAT_INTERVAL, this_host
from ._protocol import BatchRejected, RunRow, RunStore, TranscriptRow, WriteBatch

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

_monotonic = time.monotonic

_FIRST_GUESS = 20e-6
"""Seconds per inbox item before the writer has measured itself (a step's
span and its four records take about that, with CPU to spare)."""

_WAIT_LIMIT = 30.0
"""The longest a run waits for its writer; a store that takes longer is
waited for again only after as long."""


class _Flush:
    """A marker in the inbox: set when the writer has handled all before it."""

    __slots__ = ("at", "done", "failures")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.failures = 0
        self.at = _monotonic()


class _RunCursor:
    """How far the writer has read one run: its reader, and the next numbers."""

    __slots__ = ("call_seq", "event_seq", "reader", "seq_base", "spans")

    def __init__(self, run: Run) -> None:
        self.reader = RunReader(run)
        # A continuation (steptrace.extract) numbers its rows from its own base,
        # so the parts of one run that several processes write never collide.
        self.seq_base = run.record_seq_base
        self.event_seq = self.seq_base
        """Events recorded so far: keeps counting when ``take_agent_trace()``
        swaps in fresh lists."""
        self.call_seq = self.seq_base
        self.spans: list[Span] = []
        """Ended spans handled in the batch being built."""


class StoreWriter:
    """A ``SpanProcessor`` writing every run of this process to ``store``.

    Usually made by ``steptrace.store.record_runs()``; otherwise register it
    with ``steptrace.add_span_processor(writer)``, and ``close()`` it (after
    removing it) to flush and stop its thread; ``stop()`` does both and closes
    the store. ``max_lag``: how many seconds the writer may fall behind the
    run before the run waits for it (``None``: never wait, and past
    ``queue_size`` records waiting, drop). ``capture_content=False`` stores no
    prompt or response text at all (only that a call had a transcript); the
    default stores it with credentials redacted.
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
        max_lag: float | None = 1.0,
    ) -> None:
        self.store = store
        self.capture_content = capture_content
        self.interval = interval
        self.max_batch = max_batch
        self.run_end_timeout = run_end_timeout
        self.heartbeat_interval = heartbeat_interval
        self.queue_size = queue_size
        self.max_lag = max_lag
        self._lag = float("inf") if max_lag is None else max_lag
        self._encodes = encodes(store)
        self._inbox: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._runs: weakref.WeakKeyDictionary[Run, _RunCursor] = weakref.WeakKeyDictionary()
        """Writer thread only: the runs seen, and how far each was read."""
        self._open: dict[Run, _RunCursor] = {}
        """Writer thread only: runs started and not ended, read on every wake."""
        self._open_runs: dict[str, None] = {}
        """Writer thread only: ids of runs started and not ended (for heartbeats)."""
        self._counts_lock = threading.Lock()
        self.written_at = _monotonic()
        """Every record made before this ``time.monotonic()`` is written (or
        was refused): the writer thread moves it, the run's threads read it."""
        self._patient_until = 0.0
        self._item_cost = _FIRST_GUESS
        self._waited = False
        """Seconds the writer took per inbox item (with the records read with
        it) while a run waited for it: a moving average."""
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
        self._open = {}
        self._open_runs = {}
        self.written_at = _monotonic()
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
        self._encodes = encodes(reopened)
        self._thread = threading.Thread(
            target=self._drain, name="steptrace-store-writer", daemon=True
        )
        self._thread.start()

    # -- the SpanProcessor protocol (the run's threads) -----------------------------

    def on_start(self, span: Span) -> None:
        if span.kind is SpanKind.RUN:  # only a run's start is written at once
            run: Run | None = getattr(span, "run", None)
            if run is not None and span is run.root and not run.is_default:
                # The reader is made here, on the run's thread, so the run's
                # retention keeps every record until the writer has read it;
                # a run that outpaces the writer that far waits for it.
                run.backpressure.append(self._catch_up)
                self._put((_RUN_START, run, _RunCursor(run)))

    def on_end(self, span: Span) -> None:
        # Called for every span of every run: one check, one append, and now and
        # then a clock read.
        run: Run | None = getattr(span, "run", None)
        if run is None or run.is_default:
            return
        inbox = self._inbox
        waiting = len(inbox)
        if waiting < self.queue_size:
            inbox.append(span)
        else:
            self._put(span)  # counts the drop
        if span is run.root:
            self.flush(self.run_end_timeout)
        # Behind = how old the oldest unwritten record may be, plus how long
        # the writer will take to write what waits: past the bound, the run
        # waits now, so that waiting never takes longer than the bound either.
        # Checked at every 16th item waiting (a growing inbox passes each).
        elif (
            not waiting & 15
            and _monotonic() - self.written_at + waiting * self._item_cost > self._lag
        ):
            self._catch_up()

    def _catch_up(self) -> None:
        """Wait (on a run's thread) until the writer has written everything made
        so far: the one way a run waits for its store, whether it got
        ``max_lag`` ahead or pinned too many records for its retention."""
        if threading.current_thread() is self._thread:
            return
        started = _monotonic()
        if started < self._patient_until:
            return
        waiting = len(self._inbox)
        marker = self._mark()
        if marker is None:
            return
        if not marker.done.wait(_WAIT_LIMIT):
            # The store does not answer: stop waiting on it for a while.
            self._patient_until = _monotonic() + _WAIT_LIMIT
            return
        if waiting >= 100:
            self._waited = True
            # What a wait took per item waiting: how long the next one will
            # take (the writer then has the interpreter to itself).
            cost = (_monotonic() - started) / waiting
            self._item_cost = cost if not self._item_cost else 0.5 * (self._item_cost + cost)

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
        """Wait until every record made so far is written (at most ``timeout``
        seconds; ``0`` only asks the thread to write now). True when all were
        handled and no batch failed meanwhile."""
        marker = self._mark()
        if marker is None:
            return not self._inbox
        if timeout == 0:
            return False
        return marker.done.wait(timeout) and self.failures == marker.failures

    def _mark(self) -> _Flush | None:
        """A flush marker put in the inbox, the thread woken; None when the
        thread is not running."""
        if not self._thread.is_alive():
            return None
        marker = _Flush()
        marker.failures = self.failures
        self._inbox.append(marker)
        self._wake.set()
        return marker

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
        self._lag = float("inf")  # nobody waits for a stopped writer
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
        next_heartbeat = time.monotonic() + self.heartbeat_interval
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            while True:
                done, stop = self._batch()
                if stop:
                    return
                if done:
                    break
            if time.monotonic() >= next_heartbeat:
                next_heartbeat = time.monotonic() + self.heartbeat_interval
                self._heartbeat()

    def _batch(self) -> tuple[bool, bool]:
        """Write one batch: inbox items up to ``max_batch`` records of their own, then
        the new records of their runs (of every open run once the inbox is
        empty or someone flushes). Returns (inbox emptied, stop)."""
        inbox = self._inbox
        cpu = time.thread_time()
        batch: WriteBatch = EncodedBatch() if self._encodes else WriteBatch()
        touched: dict[Run, _RunCursor] = {}
        markers: list[_Flush] = []
        records = 0
        handled = 0
        stop = False
        while inbox and records < self.max_batch:
            handled += 1
            if not handled % _YIELD_EVERY:
                time.sleep(0)  # let a waiting run thread have the GIL now
            item = inbox.popleft()
            if item is _STOP:
                stop = True
                break
            if type(item) is _Flush:
                markers.append(item)
                continue
            try:
                records += self._add(batch, item, touched)
            except Exception as exc:
                self._failed("building a row", exc)
        emptied = not inbox
        # Everything made before ``seen`` is in the inbox items taken, or in
        # the runs read below, which read their records after this instant.
        seen = _monotonic()
        if emptied or markers or stop:
            for run, cursor in self._open.items():
                touched.setdefault(run, cursor)
        for run, cursor in touched.items():
            try:
                records += self._read_run(run, cursor, batch)
            except Exception as exc:
                self._failed("building a row", exc)
        if records:
            self._write(batch, records)
        items = handled - len(markers) - stop
        if items >= 100 and not self._waited:
            # Until a run has waited for it, the writer's own CPU time per item
            # is the guess (it leaves out waiting for the interpreter).
            self._item_cost = (time.thread_time() - cpu) / items
        if emptied:
            self.written_at = seen
        elif markers:
            self.written_at = max(self.written_at, markers[-1].at)
        for marker in markers:
            marker.done.set()
        return emptied, stop

    def _write(self, batch: WriteBatch, records: int) -> None:
        # A batch the store refuses for its data is written again run by run and
        # row by row (_isolation): only the rows at fault are lost, each counted
        # on its own run; any other failure loses the batch, as before.
        try:
            try:
                self.store.write(batch)
                rejected: list[Rejection] = []
            except BatchRejected:
                plain = batch.as_rows() if isinstance(batch, EncodedBatch) else batch
                rejected = write_isolated(self.store, plain)
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

    def _add(self, batch: WriteBatch, item: Any, touched: dict[Run, _RunCursor]) -> int:
        """Add the rows ``item`` stands for to ``batch`` (the run's other new
        records are read once the batch's items are in, see ``_batch``);
        return how many."""
        if type(item) is tuple:
            if item[0] == _RUN_START:
                run: Run = item[1]
                touched[run] = self._cursor(run, batch, item[2])
                return 1
            if item[0] == _AMENDED:
                run = item[1]
                touched[run] = self._cursor(run, batch)
                if run.ended_at is not None and not run.is_continuation:
                    batch.runs.append(_run_row(run, ended=True))
                    return 1
                return 0
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
        cursor = touched.get(run)
        if cursor is None:
            cursor = touched[run] = self._cursor(run, batch)
        cursor.spans.append(span)
        if span is run.root:
            self._open.pop(run, None)
            if not run.is_continuation:
                self._open_runs.pop(run.id, None)
                batch.runs.append(_run_row(run, ended=True))
                return 2
        return 1

    def _cursor(self, run: Run, batch: WriteBatch, made: _RunCursor | None = None) -> _RunCursor:
        cursor = self._runs.get(run)
        if cursor is None:
            cursor = self._runs[run] = made or _RunCursor(run)
            if run.ended_at is None:
                self._open[run] = cursor
            if not run.is_continuation:  # the run's header is its opener's to write
                self._open_runs[run.id] = None
                batch.runs.append(_run_row(run, ended=False))
        return cursor

    def _read_run(self, run: Run, cursor: _RunCursor, batch: WriteBatch) -> int:
        """Add the run's spans handled in this batch and its events, ledger rows
        and trace entries not yet read; return how many records (the spans
        were counted as they came)."""
        news = cursor.reader.read()
        spans = cursor.spans
        cursor.spans = []
        base = cursor.seq_base
        steps = [(base + at, frame) for at, frame in enumerate(news.steps, news.steps_at)]
        steps += [(base + at, frame) for at, frame in news.amended]
        add = add_encoded if type(batch) is EncodedBatch else add_rows
        add(
            batch,  # type: ignore[arg-type]
            run.id,
            spans,
            (cursor.event_seq, news.event_span_ids, news.events),
            steps,
            (cursor.call_seq, news.trace),
        )
        cursor.event_seq += len(news.events)
        cursor.call_seq += len(news.trace)
        return len(news.events) + len(steps) + len(news.trace)


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
