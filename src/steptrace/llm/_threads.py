"""Daemon worker threads for blocking work that may hang: ``DaemonPool``.

Sync tools of the agent loop and the blocking SDK calls of the providers run
here, each kind in a pool of its own, never in asyncio's default executor:
``asyncio.run`` joins that executor's threads when it ends and the interpreter
joins ``ThreadPoolExecutor`` threads at exit, so one call that never returns
would hold the loop, and the process, forever, and a few would starve
everything else that uses it.

A pool runs at most ``max_workers`` jobs at once (None: as many as are
submitted; each caller of a provider's sync call is blocked on its job anyway).
A job whose caller gave up on it (a timeout, a cancellation) is *abandoned*:
a queued one never runs; a running one keeps its thread (Python cannot stop a
thread), which leaves the pool's count, so a replacement can start at once,
and ends when the job returns. At most ``max_abandoned`` abandoned jobs may be
running; past that, ``submit`` refuses with ``PoolExhausted`` instead of
growing without bound. Threads are daemons: nothing waits for them at exit.
Idle threads end after a minute.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["DaemonPool", "PoolExhausted", "PoolStats"]

T = TypeVar("T")

IDLE_S = 60.0
"""Seconds an idle worker thread waits for work before it ends."""

_QUEUED, _RUNNING, _DONE = "queued", "running", "done"


class PoolExhausted(RuntimeError):
    """Too many abandoned jobs are still running to start another one."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A pool's size and what its threads are doing right now."""

    max_workers: int | None
    max_abandoned: int
    workers: int
    """Threads counted against ``max_workers`` (busy or idle)."""
    abandoned: int
    """Threads still running a job their caller gave up on."""
    queued: int


class Job(Generic[T]):
    """One submitted call: its state, and its outcome once done."""

    __slots__ = ("_done", "abandoned", "error", "fn", "on_done", "result", "state")

    def __init__(self, fn: Callable[[], T], on_done: Callable[[Job[T]], None] | None) -> None:
        self.fn = fn
        self.on_done = on_done
        self.state = _QUEUED
        self.abandoned = False
        self.result: T | None = None
        self.error: BaseException | None = None
        # Made by the first synchronous wait: an awaited job (an agent's tool)
        # is woken by on_done and never needs one.
        self._done: threading.Event | None = None

    def wait(self, timeout: float | None) -> bool:
        """Whether the job finished within ``timeout`` seconds (one waiter)."""
        if self.state is _DONE:
            return True
        done = self._done
        if done is None:
            done = self._done = threading.Event()
        # Set before this second look: a job finishing now sees the event.
        return self.state is _DONE or done.wait(timeout)

    def outcome(self) -> T:
        """The job's return value, or its exception raised (call once done)."""
        if self.error is not None:
            error, self.error = self.error, None  # no reference cycle through the traceback
            raise error
        return self.result  # type: ignore[return-value]

    def _run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # SystemExit from a tool ends the loop, not this thread
            self.error = exc
        self.state = _DONE
        done = self._done
        if done is not None:
            done.set()
        if self.on_done is not None:
            self.on_done(self)


class DaemonPool:
    """A bounded pool of daemon threads (see the module docstring)."""

    def __init__(self, name: str, *, max_workers: int | None, max_abandoned: int) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[Job[Any]] = deque()
        self._workers = 0
        self._idle = 0
        self._abandoned = 0
        self._numbers = 0
        self.resize(max_workers=max_workers, max_abandoned=max_abandoned)

    def resize(self, *, max_workers: int | None, max_abandoned: int) -> None:
        """Change the bounds; running jobs are not affected."""
        for field, value, minimum in (
            ("max_workers", max_workers, 1),
            ("max_abandoned", max_abandoned, 0),
        ):
            if value is None and field == "max_workers":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{self.name}: {field} must be an int, got {value!r}")
            if value < minimum:
                raise ValueError(f"{self.name}: {field} must be >= {minimum}, got {value}")
        with self._lock:
            self.max_workers = max_workers
            self.max_abandoned = max_abandoned
            self._spawn_if_needed()

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                self.max_workers,
                self.max_abandoned,
                self._workers,
                self._abandoned,
                len(self._queue),
            )

    def submit(
        self, fn: Callable[[], T], on_done: Callable[[Job[T]], None] | None = None
    ) -> Job[T]:
        """Queue ``fn`` (called with no arguments in a worker thread);
        ``on_done(job)`` runs in that thread when it returns or raises."""
        job = Job(fn, on_done)
        with self._lock:
            if self._abandoned >= self.max_abandoned:
                raise PoolExhausted(
                    f"{self._abandoned} calls abandoned after their timeout are still running "
                    f"in {self.name} threads (the limit is {self.max_abandoned}); no new one "
                    "starts until some of them return"
                )
            self._queue.append(job)
            self._spawn_if_needed()
            self._ready.notify()
        return job

    def abandon(self, job: Job[Any]) -> None:
        """The caller gives up on ``job``: it never starts, or its thread leaves the pool."""
        with self._lock:
            if job.abandoned or job.state == _DONE:
                return
            job.abandoned = True
            if job.state == _QUEUED:
                self._queue.remove(job)
                return
            self._workers -= 1
            self._abandoned += 1
            self._spawn_if_needed()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker and await its outcome; a cancelled wait (a
        timeout) abandons the job and never waits for its thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake(_: Job[T]) -> None:
            try:
                loop.call_soon_threadsafe(_settle, future)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

        job = self.submit(fn, wake)
        try:
            await future
        except BaseException:
            self.abandon(job)
            raise
        return job.outcome()

    # -- worker threads (the lock is held where noted) ------------------------------

    def _spawn_if_needed(self) -> None:
        """Start a thread when queued jobs outnumber idle ones (lock held)."""
        if len(self._queue) <= self._idle:
            return
        if self.max_workers is not None and self._workers >= self.max_workers:
            return
        self._workers += 1
        self._numbers += 1
        thread = threading.Thread(
            target=self._work, name=f"{self.name}-{self._numbers}", daemon=True
        )
        thread.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._idle += 1
                    woken = self._ready.wait(IDLE_S)
                    self._idle -= 1
                    if not woken and not self._queue:
                        self._workers -= 1
                        return
                job = self._queue.popleft()
                job.state = _RUNNING
            job._run()
            with self._lock:
                if job.abandoned:  # this thread left the pool when its job was abandoned
                    self._abandoned -= 1
                    return


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
