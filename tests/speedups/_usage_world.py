"""Replaying one script of ``record_llm_usage`` calls on a fresh run, with either
implementation, and reducing everything the run recorded to plain data.

Shared by the ``test_usage*`` modules: a script run once with the compiled
``record_llm_usage`` and once with the pure-Python reference must give equal
records (ledger rows, ledgers, trace log, run summary, errors, hook calls).
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

import steptrace
import steptrace._speedups as speedups
from steptrace import _accounting, _context
from steptrace._shared import PoolTotals, SharedBudget
from steptrace.budget import Ledger
from steptrace.hooks import registered_hooks
from tests.test_speedups import require_built

COMPILED: Callable[..., None] = _accounting.record_llm_usage
"""The public name: the compiled recorder when it is built."""
REFERENCE: Callable[..., None] = _accounting._reference_record_llm_usage


def require_compiled() -> None:
    """Skip unless the public ``record_llm_usage`` is the compiled one: fail in
    CI when it is not built (``require_built``), skip when turned off."""
    require_built("usage")
    if speedups.PURE_PYTHON:
        pytest.skip("STEPTRACE_PURE_PYTHON=1 turns the compiled record_llm_usage off")


def compiled_module() -> Any:
    """``steptrace._speedups.usage`` (call after ``require_built("usage")``)."""
    return importlib.import_module("steptrace._speedups.usage")


def recorder_config() -> dict[str, Any]:
    """The configuration ``_accounting`` gave the public recorder."""
    return {
        "exhausted": _accounting._exhausted,
        "active": _context._active,
        "pending": _context.pending_hold,
        "held": _accounting._HELD,
        "hooks": registered_hooks,
        "threshold": _accounting._THRESHOLD,
        "time": vars(_accounting)["_time"],
        "PricingUnknown": steptrace.PricingUnknown,
        "price_call": vars(_accounting)["price_call"],
        "Frame": _context.Frame,
        "PersonaFrame": _context.PersonaFrame,
        "StepFrame": _context.StepFrame,
        "Ledger": Ledger,
        "Hold": _accounting.Hold,
    }


class FlatPrices:
    """A price source: a millionth of a dollar a token; no price for the model
    ``unknown``, and a broken source for the model ``boom``."""

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None:
        if model == "boom":
            raise RuntimeError("the price source failed")
        return None if model == "unknown" else (input_tokens + output_tokens) * 1e-6


class DictPool:
    """A shared pool kept in a dict: a user's own ``SharedPool`` for one process."""

    kind = "dict"
    url = "dict://"

    def __init__(self) -> None:
        self.counters: dict[str, list[int]] = {}
        self.held: dict[str, tuple[int, int]] = {}
        self.next_id = 0

    def _totals(self, key: str) -> PoolTotals:
        tokens, pico = self.counters.get(key, [0, 0])
        held = [v for k, v in self.held.items() if k.startswith(key + "#")]
        return PoolTotals(tokens, pico, sum(t for t, _ in held), sum(p for _, p in held))

    def reserve(
        self,
        key: str,
        tokens: int,
        pico: int,
        *,
        max_tokens: int | None,
        max_pico: int | None,
        ttl: float,
        retention: float | None,
    ) -> tuple[str | None, PoolTotals]:
        totals = self._totals(key)
        if (max_tokens is not None and totals.committed_tokens + tokens > max_tokens) or (
            max_pico is not None and totals.committed_pico + pico > max_pico
        ):
            return None, totals
        self.next_id += 1
        reservation = f"{key}#{self.next_id}"
        self.held[reservation] = (tokens, pico)
        return reservation, self._totals(key)

    def settle(
        self, key: str, reservation: str | None, tokens: int, pico: int, *, retention: float | None
    ) -> PoolTotals:
        if reservation is not None:
            self.held.pop(reservation, None)
        counter = self.counters.setdefault(key, [0, 0])
        counter[0] += tokens
        counter[1] += pico
        return self._totals(key)

    def release(self, key: str, reservation: str) -> None:
        self.held.pop(reservation, None)

    def totals(self, key: str) -> PoolTotals:
        return self._totals(key)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Record:
    """One ``record_llm_usage`` call: its positional and keyword arguments."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckBudget:
    model: str
    estimated_input_tokens: int
    max_output_tokens: int


@dataclass(frozen=True)
class ReleaseHold:
    pass


@dataclass(frozen=True)
class ThresholdHook:
    percent: int


Op = Record | CheckBudget | ReleaseHold | ThresholdHook


@dataclass(frozen=True)
class Script:
    """A run with an optional budget around a persona around two nested steps;
    ``outer`` runs in the outer step, ``inner`` in the inner one, ``late`` in a
    copy of the inner step's context after the step ended and ``after`` after
    the run ended."""

    run_budget: dict[str, Any] | None
    persona_budget: dict[str, Any] | None
    outer_budget: dict[str, Any] | None
    inner_budget: dict[str, Any] | None
    inner_model: str | None
    tracing: bool
    retain: int | None
    shared: dict[str, Any] | None
    priced: bool
    outer: tuple[Op, ...]
    inner: tuple[Op, ...]
    late: tuple[Op, ...] = ()
    after: tuple[Op, ...] = ()


@contextmanager
def implementation(record: Callable[..., None]) -> Iterator[None]:
    """Make ``record`` the ``record_llm_usage`` every path calls (the public
    name, ``Hold.settle``, ``arecord_llm_usage``)."""
    saved = _accounting.record_llm_usage
    _accounting.record_llm_usage = record
    try:
        yield
    finally:
        _accounting.record_llm_usage = saved


def error_data(exc: BaseException) -> tuple[Any, ...]:
    """An error as data: its type, message and every field it carries."""
    fields = {k: v for k, v in vars(exc).items() if not k.startswith("_")}
    return (type(exc).__name__, str(exc), sorted(fields.items(), key=lambda kv: kv[0]))


def ledgers_data(frame: Any) -> list[tuple[Any, ...]]:
    return [
        (
            ledger.kind,
            ledger.name,
            ledger.input_tokens,
            ledger.output_tokens,
            ledger.cost_pico,
            ledger.llm_calls,
            ledger.unpriced_calls,
            ledger.held_tokens,
            ledger.held_pico,
        )
        for ledger in frame.accounted
    ]


def replay(script: Script, record: Callable[..., None]) -> dict[str, Any]:
    """Play ``script`` on a fresh run with ``record`` as ``record_llm_usage``."""
    steptrace.reset()
    steptrace.configure(price_source=FlatPrices() if script.priced else None)
    outcomes: list[Any] = []
    hook_calls: list[Any] = []
    snapshots: list[Any] = []

    def on_threshold(context: Any) -> None:
        hook_calls.append(
            (
                context.scope,
                context.persona,
                context.step,
                tuple(context.usage),
                context.budget_pct,
                context.threshold_pct,
            )
        )

    def play(ops: tuple[Op, ...]) -> None:
        for op in ops:
            try:
                if isinstance(op, Record):
                    _accounting.record_llm_usage(*op.args, **op.kwargs)
                elif isinstance(op, CheckBudget):
                    steptrace.check_budget(
                        op.model,
                        op.estimated_input_tokens,
                        op.max_output_tokens,
                        price=FlatPrices(),
                    )
                elif isinstance(op, ReleaseHold):
                    steptrace.release_budget_hold()
                else:
                    steptrace.register_persona_hook(
                        "*", f"OnBudgetThreshold({op.percent})", on_threshold
                    )
                outcomes.append("ok")
            except Exception as exc:
                outcomes.append(error_data(exc))
        snapshots.append(ledgers_data(_context.get_frame()))

    pool = DictPool()
    budget: Any = script.run_budget
    if script.shared is not None:
        shared = SharedBudget("pool", pool=pool, **script.shared)
        budget = [script.run_budget or {}, shared]
    captured: list[contextvars.Context] = []

    @steptrace.step(name="inner", model=script.inner_model, budget=script.inner_budget)
    def inner() -> None:
        play(script.inner)
        captured.append(contextvars.copy_context())

    @steptrace.step(name="outer", budget=script.outer_budget)
    def outer() -> None:
        play(script.outer)
        inner()
        captured[0].run(play, script.late)

    @steptrace.persona(name="agent", budget=script.persona_budget)
    def agent() -> None:
        outer()

    with implementation(record):
        with steptrace.run("script", budget=budget, retain=script.retain) as run:
            steptrace.enable_tracing(script.tracing)
            agent()
        captured[0].run(play, script.after)
    steptrace.clear_hooks()
    summary = run.summary()
    del summary["run_id"], summary["duration_ms"]
    return {
        "outcomes": outcomes,
        "hooks": hook_calls,
        "ledgers": snapshots,
        "run": (run.status, run.late_calls, dict(run.dropped), summary),
        "rows": [
            row._replace(span_id=0, parent_span_id=0, started_ns=0, ended_ns=0)
            for row in run.completed_steps
        ],
        "trace": [(*record[:6], record.frame.name, record.late) for record in run.trace_records()],
        # Counters are keyed by run id: compare what they hold.
        "pool": (sorted(tuple(v) for v in pool.counters.values()), len(pool.held)),
    }
