"""The background writer: live runs into a ``RunStore``, off the run's hot path.

``StoreWriter`` is a steptrace ``SpanProcessor``. Its callbacks run on the
run's own threads, so they only append small records (references to the span,
event or step frame, plus a number) to a bounded queue; a daemon thread drains
the queue, turns the records into rows (``to_dict()``, the ledger row, the
run's totals) and writes them in batched transactions: a batch closes after
about ``interval`` seconds or ``max_batch`` records, or at once when someone
flushes. What is recorded, per run:

- the run row at the root's start (``running``) and at its end (status, error,
  totals from ``run.usage()``), and when the writer first sees a run it joined
  mid-way;
- every span when it ends;
- the run's new agent events, completed steps and LLM trace entries, read at
  every span start and end of the run from its append-only lists
  (``EventCursor``, ``run.ended_steps``, ``TraceCursor``) without the run's
  lock, as the OpenTelemetry exporter does, so a callback can never deadlock a
  thread that holds that lock;
- each ``llm_call`` request's content (``on_transcript``), redacted, or only
  its place when ``capture_content`` is off;
- while a run is open, a heartbeat every ``HEARTBEAT_INTERVAL`` seconds, so a
  store opened after this process died can tell the run was ``interrupted``.

Default runs (steps called outside any ``steptrace.run()``) never end and are
not recorded. At the run root's end the writer flushes, waiting at most
``run_end_timeout`` seconds; it also flushes at interpreter exit (``atexit``).
Nothing reaches the run: a full queue drops the record (counted in
``dropped``, logged once), a failed batch is rolled back by the store, counted
in ``failures`` and logged (the first with its traceback).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _config
from .._context import Frame, StepFrame
from .._redact import redacted
from .._run import EventCursor, TraceCursor, active_frame, ledger_row
from .._span_context import span_context
from ..spans import remove_span_processor
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

_FLUSH = object()
_STOP = object()

# Records, built on the run's thread (kept tiny): (number, kind, payload...).
_RUN_START = 0
_RUN_END = 1
_SPAN = 2
_EVENT = 3
_STEP = 4
_CALL = 5
_TRANSCRIPT = 6


class _RunCursor:
    """How far the writer has read one run's event log and ledger."""

    __slots__ = ("call_seq", "event_seq", "events", "steps_read", "trace")

    def __init__(self, run: Run) -> None:
        self.events = EventCursor(run)
        self.event_seq = 0
        """Events recorded so far: keeps counting when ``take_agent_trace()``
        swaps in fresh lists."""
        self.steps_read = 0
        self.trace = TraceCursor(run)
        self.call_seq = 0


class StoreWriter:
    """A ``SpanProcessor`` writing every run of this process to ``store``.

    Register it with ``steptrace.add_span_processor(writer)``; ``close()`` it
    (after removing it) to flush and stop its thread. The store is not closed
    by the writer. ``queue_size`` bounds the records waiting to be written.
    ``capture_content=False`` stores no prompt or response text at all (only
    that a call had a transcript); the default stores it with credentials
    redacted.
    """

    def __init__(
        self,
        store: RunStore,
        *,
        capture_content: bool = True,
        queue_size: int = 10_000,
        interval: float = 0.1,
        max_batch: int = 500,
        run_end_timeout: float = 2.0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.store = store
        self.capture_content = capture_content
        self.heartbeat_interval = heartbeat_interval
        self._open_runs: dict[str, None] = {}
        """Ids of the runs this writer saw start and not end (heartbeats)."""
        self.interval = interval
        self.max_batch = max_batch
        self.run_end_timeout = run_end_timeout
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._runs: weakref.WeakKeyDictionary[Run, _RunCursor] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._done = threading.Condition(threading.Lock())
        self._numbered = 0
        self._handled = 0
        self.dropped = 0
        """Records dropped because the queue was full."""
        self.failures = 0
        """Batches (or callbacks) that failed; each logged, none reached a run."""
        self.written = 0
        """Records committed to the store."""
        self._closed = False
        self._thread = threading.Thread(
            target=self._drain, name="steptrace-store-writer", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    # -- the SpanProcessor protocol -------------------------------------------------

    def on_start(self, span: Span) -> None:
        try:
            run: Run | None = getattr(span, "run", None)
            if run is None or run.is_default:
                return
            records: list[tuple[Any, ...]] = []
            self._collect(run, span is run.root, records)
            self._enqueue(records)
        except Exception as exc:
            self._failed("on_start", exc)

    def on_end(self, span: Span) -> None:
        try:
            run: Run | None = getattr(span, "run", None)
            if run is None or run.is_default:
                return
            records: list[tuple[Any, ...]] = []
            self._collect(run, False, records)
            records.append((_SPAN, span))
            is_root = span is run.root
            if is_root:
                records.append((_RUN_END, run))
            self._enqueue(records)
            if is_root:
                with self._lock:
                    self._runs.pop(run, None)
                self.flush(self.run_end_timeout)
        except Exception as exc:
            self._failed("on_end", exc)

    def on_transcript(
        self, span: Span, content: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
    ) -> None:
        try:
            if active_frame().run.is_default:
                return
            self._enqueue([(_TRANSCRIPT, span.run_id, span.span_id, content)])
        except Exception as exc:
            self._failed("on_transcript", exc)

    # -- flushing and closing -----------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every record enqueued so far is handled (at most ``timeout``
        seconds; ``0`` only asks the thread to write now). True when all were
        handled and no batch failed meanwhile."""
        with self._done:
            target = self._numbered
            failures = self.failures
            if self._handled >= target:
                return True
        if not self._thread.is_alive():
            return False
        try:
            self._queue.put_nowait(_FLUSH)
        except queue.Full:
            pass  # the thread has a full batch to write anyway
        if timeout == 0:
            return False
        with self._done:
            reached = self._done.wait_for(lambda: self._handled >= target, timeout)
            return reached and self.failures == failures

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
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            logger.warning("steptrace: store writer queue still full at close")
        self._thread.join(timeout)

    # -- the run's side: collect and enqueue ---------------------------------------

    def _collect(self, run: Run, starting: bool, records: list[tuple[Any, ...]]) -> None:
        """Records for a run's header (when new) and its new events and steps."""
        with self._lock:
            cursor = self._runs.get(run)
            if cursor is None:
                cursor = self._runs[run] = _RunCursor(run)
                records.append((_RUN_START, run))
            elif starting:
                records.append((_RUN_START, run))
            for span_id, event in cursor.events.read():
                records.append((_EVENT, run.id, cursor.event_seq, span_id, event))
                cursor.event_seq += 1
            for entry in cursor.trace.read():
                records.append((_CALL, run.id, cursor.call_seq, entry))
                cursor.call_seq += 1
            ended = run.ended_steps
            records.extend(
                (_STEP, run.id, index, ended[index])
                for index in range(cursor.steps_read, len(ended))
            )
            cursor.steps_read = max(len(ended), cursor.steps_read)

    def _enqueue(self, records: list[tuple[Any, ...]]) -> None:
        put = self._queue.put_nowait
        for record in records:
            with self._done:
                try:
                    put((self._numbered + 1, record))
                except queue.Full:
                    self.dropped += 1
                    first = self.dropped == 1
                else:
                    self._numbered += 1
                    continue
            if first:
                logger.warning(
                    "steptrace: run store queue full (%d records); dropping records",
                    self._queue.maxsize,
                )

    def _failed(self, where: str, exc: Exception) -> None:
        with self._done:
            self.failures += 1
            first = self.failures == 1
        if first:
            logger.warning("steptrace: run store %s failed", where, exc_info=exc)
        else:
            logger.debug("steptrace: run store %s failed: %r", where, exc)
        if _config.settings.strict and where.startswith("on_"):
            raise exc

    # -- the writer thread --------------------------------------------------------

    def _drain(self) -> None:
        get = self._queue.get
        next_heartbeat = time.monotonic() + self.heartbeat_interval
        while True:
            items: list[tuple[int, tuple[Any, ...]]] = []
            stop = False
            try:
                item = get(timeout=max(0.0, next_heartbeat - time.monotonic()))
            except queue.Empty:
                item = _FLUSH
            if time.monotonic() >= next_heartbeat:
                next_heartbeat = time.monotonic() + self.heartbeat_interval
                self._heartbeat()
            deadline = time.monotonic() + self.interval
            while True:
                if item is _STOP:
                    stop = True
                    break
                if item is _FLUSH:
                    break
                items.append(item)
                remaining = deadline - time.monotonic()
                if len(items) >= self.max_batch or remaining <= 0:
                    break
                try:
                    item = get(timeout=remaining)
                except queue.Empty:
                    break
            if items:
                self._write(items)
            if stop:
                return

    def _heartbeat(self) -> None:
        open_runs = list(self._open_runs)
        if not open_runs:
            return
        now = time.time()
        try:
            self.store.write(WriteBatch(heartbeats=[(run_id, now) for run_id in open_runs]))
        except Exception as exc:
            self._failed("heartbeat", exc)

    def _write(self, items: list[tuple[int, tuple[Any, ...]]]) -> None:
        try:
            batch = self._build(record for _, record in items)
            self.store.write(batch)
        except Exception as exc:
            self._failed("write", exc)
        else:
            self.written += len(items)
        with self._done:
            self._handled = max(self._handled, items[-1][0])
            self._done.notify_all()

    def _build(self, records: Any) -> WriteBatch:
        batch = WriteBatch()
        for record in records:
            kind = record[0]
            if kind == _TRANSCRIPT:
                _, run_id, span_id, content = record
                request: dict[str, Any] | None = None
                response: dict[str, Any] | None = None
                if self.capture_content:
                    request, response = redacted(content())
                batch.transcripts.append(
                    TranscriptRow(
                        run_id=run_id, span_id=span_id, request=request, response=response
                    )
                )
            elif kind == _CALL:
                batch.llm_calls.append(_call_row(record[1], record[2], record[3]))
            elif kind == _RUN_START:
                self._open_runs[record[1].id] = None
                batch.runs.append(_run_row(record[1], ended=False))
            elif kind == _RUN_END:
                self._open_runs.pop(record[1].id, None)
                batch.runs.append(_run_row(record[1], ended=True))
            else:
                _add_row(batch, record)
        return batch


def _call_row(run_id: str, seq: int, entry: tuple[Any, ...]) -> LlmCallRow:
    model, input_tokens, output_tokens, duration_ms, cost_usd, cache_tokens, frame, at = entry
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


def _add_row(batch: WriteBatch, record: tuple[Any, ...]) -> None:
    kind = record[0]
    if kind == _SPAN:
        span: Span = record[1]
        data = span.to_dict()
        batch.spans.append(
            SpanRow(
                run_id=data["run_id"],
                span_id=data["span_id"],
                parent_id=data["parent_id"],
                name=data["name"],
                kind=data["kind"],
                start_ns=data["start_ns"],
                end_ns=data["end_ns"],
                status=data["status"],
                error=data["error"],
                metadata=data["metadata"],
                context=span_context(span),
            )
        )
    elif kind == _EVENT:
        _, run_id, seq, span_id, event = record
        batch.events.append(EventRow(run_id=run_id, seq=seq, span_id=span_id, data=event.to_dict()))
    elif kind == _STEP:
        _, run_id, seq, frame = record
        assert isinstance(frame, StepFrame)
        batch.steps.append(StepRow(run_id=run_id, seq=seq, data=ledger_row(frame).to_dict()))


def _run_row(run: Run, *, ended: bool) -> RunRow:
    budget = None if run.budget is None else run.budget.to_dict()
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
    )
