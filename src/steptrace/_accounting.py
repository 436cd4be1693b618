"""Accounting: holding budget for calls, recording their usage, enforcing limits.

``record_llm_usage`` is the seed's ``record_step_llm_usage`` widened to nested
scopes: the innermost step gets the call in its own counters (its ledger row),
and every enclosing budget ledger (budgeted steps, personas, the run and the
runs around it) gets it in its subtree totals, all under the run's lock. Then,
outside the lock, ``OnBudgetThreshold`` hooks that the new totals reach fire
(once per scope invocation), and the first scope, innermost first, whose usage
is now strictly over a limit raises ``BudgetExhausted``.

``reserve`` is the pre-flight: under the same lock it checks that the call's
worst case fits beside what every limited scope has used *and what other
calls in flight hold*, and holds it there (then in shared pools); the
``Hold`` it returns is settled by the call's usage or released when the call
fails, so concurrent calls cannot together overspend a scope. ``check_budget``
is ``reserve`` with the hold kept in this context for the next
``record_llm_usage`` here. Usage recorded after its scope ended (a thread that
outlived its step, a generator resumed later) is kept, counted and flagged
late, and a run that ends over a limit says so in its status.

``record_llm_usage`` runs on every model call, so its common path is written
flat: one combined argument test, one lock, no allocation but the trace tuple.
When the optional accelerator ``steptrace._speedups.usage`` is built, the
public name is its compiled twin of that common path (valid arguments, no
hold, not late, no shared budget or threshold hook), which hands every other
call to
the function here, unchanged: the reference, tested against it.
"""

from __future__ import annotations

import contextvars
import functools
import math
import sys
import threading
import warnings
from time import time as _time
from types import TracebackType
from typing import Any

from . import _context, _reservations
from ._pricing import price_call
from ._run import active_frame, amend_late
from ._speedups import load as load_speedup
from .budget import (
    MAX_CALL_TOKENS,
    MAX_CALL_USD,
    PICO_PER_USD,
    Ledger,
    PriceSource,
    pico_to_usd,
)
from .errors import BudgetExhausted, PricingUnknown
from .hooks import (
    HookContext,
    HookEvent,
    HookRegistration,
    adispatch,
    dispatch,
    matching_hooks,
    registered_hooks,
)

__all__ = ["Hold", "arecord_llm_usage", "check_budget", "record_llm_usage", "reserve"]

_Frame = _context.Frame
_get_frame = _context.get_frame
_get_pending = _context.pending_hold.get
_pending_holds = False
"""Whether any ``check_budget`` has placed a context hold in this process."""
_MAXT = MAX_CALL_TOKENS
_NO_HOLDS: _reservations.SharedHeld = []  # never mutated: the common case allocates nothing
_MAXC = MAX_CALL_USD
_THRESHOLD = HookEvent.ON_BUDGET_THRESHOLD
_ThresholdCall = tuple[list[HookRegistration], HookContext, Any]

# Set by arecord_llm_usage: threshold hooks due during the record are queued
# here, to be awaited on the caller's loop, instead of being run synchronously.
_deferred_hooks: contextvars.ContextVar[list[_ThresholdCall] | None] = contextvars.ContextVar(
    "steptrace_deferred_hooks", default=None
)


def _check_count(where: str, name: str, value: object) -> int:
    if type(value) is int and 0 <= value <= _MAXT:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an int, got {_short(value)}")
    raise ValueError(f"{where}: {name} must be between 0 and {_MAXT:,}, got {_short(value)}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validate(
    model: object,
    input_tokens: object,
    output_tokens: object,
    cost_usd: object,
    duration_ms: object,
    cache_tokens: object,
) -> int:
    """The slow path of argument checking: raise naming the bad argument, or
    return ``duration_ms`` as an int (a float duration is rounded)."""
    where = "record_llm_usage"
    if not isinstance(model, str):
        raise TypeError(f"{where}: model must be a string, got {model!r}")
    _check_count(where, "input_tokens", input_tokens)
    _check_count(where, "output_tokens", output_tokens)
    _check_count(where, "cache_tokens", cache_tokens)
    if cost_usd is not None and not (
        isinstance(cost_usd, int | float)
        and not isinstance(cost_usd, bool)
        and math.isfinite(cost_usd)
        and 0 <= cost_usd <= _MAXC
    ):
        raise ValueError(
            f"{where}: cost_usd must be a number between 0 and {_MAXC:,.0f}, got {_short(cost_usd)}"
        )
    if isinstance(duration_ms, float) and math.isfinite(duration_ms) and 0 <= duration_ms <= _MAXT:
        return round(duration_ms)
    return _check_count(where, "duration_ms", duration_ms)


def _exhausted(
    frame: _Frame,
    ledger: Ledger,
    limit: Any,
    limit_value: float,
    *,
    projected: float | None = None,
) -> BudgetExhausted:
    """The error for ``ledger``'s scope; ``frame`` is where the call was made.

    ``step``/``function``/``error_boundary`` describe the step whose budget it
    is, or, for a persona or run budget, the innermost step at the time."""
    owner = ledger.owner if ledger.kind == "step" else frame.step
    definition = None if owner is None else owner.definition
    return BudgetExhausted(
        step="" if definition is None else definition.name,
        function="" if definition is None else definition.function,
        limit=limit,
        limit_value=limit_value,
        consumed_tokens=ledger.input_tokens + ledger.output_tokens,
        consumed_cost_usd=pico_to_usd(ledger.cost_pico),
        error_boundary="fail" if definition is None else definition.error_boundary.value,
        scope=ledger.kind,
        scope_name=ledger.name,
        preflight=projected is not None,
        projected=projected,
    )


def _due_thresholds(frame: _Frame) -> list[_ThresholdCall]:
    """Threshold hooks newly reached by any budget ledger (caller holds the lock)."""
    calls: list[_ThresholdCall] = []
    for ledger in frame.accounted:
        pct = ledger.budget_pct()
        if pct is None:
            continue
        persona_frame = ledger.owner.persona if ledger.owner is not None else None
        persona = None if persona_frame is None else persona_frame.name
        step_name = ledger.name if ledger.kind == "step" else None
        fired = ledger.fired_thresholds
        due = [
            hook
            for hook in matching_hooks(_THRESHOLD, persona, step_name, pct)
            if fired is None or hook.id not in fired
        ]
        if not due:
            continue
        if fired is None:
            fired = ledger.fired_thresholds = set()
        fired.update(hook.id for hook in due)
        usage = ledger.usage()
        for hook in due:
            context = HookContext(
                event=_THRESHOLD,
                persona=persona,
                step=step_name,
                usage=usage,
                budget_pct=pct,
                threshold_pct=hook.threshold_pct,
                scope=ledger.kind,
                run_id=frame.run.id,
            )
            calls.append(([hook], context, frame))
    return calls


def record_llm_usage(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cost_usd: float | None = None,
    duration_ms: int = 0,
    cache_tokens: int = 0,
    cache_write_tokens: int = 0,
    _hold: Hold | None = None,
    _priced: bool = False,
) -> None:
    """Record one LLM call's usage in the active step and every enclosing budget.

    ``cost_usd=None`` asks the configured price source; an empty ``model`` means
    the active step's model. ``cache_tokens`` (cache reads) and
    ``cache_write_tokens`` are parts of ``input_tokens``, priced at the cache
    rates when the price source prices the call. Raises ``BudgetExhausted``
    when a step, persona or run budget is now strictly exceeded (after its
    ``OnBudgetThreshold`` hooks ran), and ``PricingUnknown`` when the call could
    not be priced while a USD budget is in force. The usage is recorded before
    either is raised, and appears in the run's LLM trace log when tracing is on.
    A pending hold of this context (``check_budget``) is settled by it.
    Token counts, ``duration_ms`` and ``cache_*`` must be ints in
    ``0..MAX_CALL_TOKENS``; ``cost_usd`` a number in ``0..MAX_CALL_USD``.
    A call whose price stays unknown counts in every ledger's
    ``unpriced_calls``. ``_priced``: the caller already asked the price source
    (``cost_usd=None`` is then its answer, not a question).
    """
    # One combined test on the common path; _validate explains any failure.
    # The bound is 2**40 - 1, so the ints' bitwise or is within 0..bound
    # exactly when each of them is.
    if not (
        type(model) is str
        and type(input_tokens) is int
        and type(output_tokens) is int
        and type(duration_ms) is int
        and type(cache_tokens) is int
        and 0 <= (input_tokens | output_tokens | duration_ms | cache_tokens) <= _MAXT
        and (cost_usd is None or (type(cost_usd) is float and 0.0 <= cost_usd <= _MAXC))
    ):
        duration_ms = _validate(
            model, input_tokens, output_tokens, cost_usd, duration_ms, cache_tokens
        )
        if cost_usd is not None:
            cost_usd = float(cost_usd)

    if _hold is None:
        frame = _get_frame() or active_frame()
        # No context looks for a pending hold until check_budget has made one.
        hold = _get_pending() if _pending_holds else None
    else:
        frame = _hold.frame
        hold = _hold
    run = frame.run
    step = frame.step
    named = model
    if not model and step is not None:
        model = step.definition.model or ""
    priced = True
    price_error: BaseException | None = None
    if cost_usd is None:
        if not _priced:
            if type(cache_write_tokens) is not int or not 0 <= cache_write_tokens <= _MAXT:
                _check_count("record_llm_usage", "cache_write_tokens", cache_write_tokens)
            try:
                cost_usd = price_call(
                    model, input_tokens, output_tokens, cache_tokens, cache_write_tokens
                )
            except Exception as exc:  # a broken price source: the call is still recorded
                price_error = exc
                cost_usd = None
        if cost_usd is None:
            priced = False
            cost_usd = 0.0
    pico = round(cost_usd * PICO_PER_USD)
    exceeded: BaseException | None = None
    thresholds: list[_ThresholdCall] | None = None
    shared_held: _reservations.SharedHeld = _NO_HOLDS
    late = frame.end_ns is not None or run.ended_at is not None
    trim = False

    lock = run.lock
    lock.acquire()
    try:
        if hold is not None and hold.state is _HELD:
            hold.state = _SETTLED
            shared_held = hold.shared
            for ledger in hold.ledgers:
                ledger.held_tokens -= hold.tokens
                ledger.held_pico -= hold.pico
        if step is not None:
            step.own_input_tokens += input_tokens
            step.own_output_tokens += output_tokens
            step.own_cost_pico += pico
            step.own_llm_calls += 1
            if named:  # the seed keeps the last model named, not the declared default
                step.last_model = named
        for ledger in frame.accounted:
            ledger.input_tokens += input_tokens
            ledger.output_tokens += output_tokens
            ledger.cost_pico += pico
            ledger.llm_calls += 1
            if exceeded is not None:
                continue
            # The innermost scope now strictly over a limit is the one named.
            limit = ledger.max_tokens
            if limit is not None and ledger.input_tokens + ledger.output_tokens > limit:
                exceeded = _exhausted(frame, ledger, "max_tokens", limit)
            elif ledger.max_pico is not None and ledger.cost_pico > ledger.max_pico:
                exceeded = _exhausted(frame, ledger, "max_usd", pico_to_usd(ledger.max_pico))
        if not priced:  # off the common path: a cost unknown is counted, never $0
            if step is not None:
                step.own_unpriced_calls += 1
            for ledger in frame.accounted:
                ledger.unpriced_calls += 1
        if run.tracing_enabled:
            # The TraceRecord kept as a plain tuple of its fields (see Run's
            # appending section): building the named tuple here costs half a
            # ContextVar set/reset pair a call (bench_instructions.py).
            raw = run.raw_trace
            raw.append(
                (
                    model,
                    input_tokens,
                    output_tokens,
                    duration_ms,
                    cost_usd if priced else None,
                    cache_tokens,
                    frame,
                    _time(),
                    late,
                )
            )
            trim = len(raw) > run.trim_at
        if registered_hooks and _THRESHOLD in registered_hooks:
            thresholds = _due_thresholds(frame)
    finally:
        lock.release()

    if trim:
        run.trim()
    if late:
        amend_late(frame)
    if frame.shared or shared_held:
        # The one test the hot path makes for shared budgets (see _reservations).
        problem = _reservations.settle(
            frame, shared_held, model, input_tokens + output_tokens, pico, priced
        )
        if exceeded is None:
            exceeded = problem
    if not priced and exceeded is None:  # a failed price source leaves it unpriced too
        if price_error is not None:
            exceeded = price_error
        else:
            unpriced = next((led for led in frame.accounted if led.max_pico is not None), None)
            if unpriced is not None:
                exceeded = PricingUnknown(model, scope=unpriced.kind, scope_name=unpriced.name)
    if thresholds:
        deferred = _deferred_hooks.get()
        if deferred is not None:
            deferred.extend(thresholds)
        else:
            for hooks, context, span in thresholds:
                dispatch(hooks, context, span)
    if exceeded is not None:
        raise exceeded


async def arecord_llm_usage(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cost_usd: float | None = None,
    duration_ms: int = 0,
    cache_tokens: int = 0,
    cache_write_tokens: int = 0,
    _hold: Hold | None = None,
    _priced: bool = False,
) -> None:
    """``record_llm_usage`` for async code: async threshold hooks are awaited on
    this loop (before any exhaustion error is raised)."""
    pending: list[_ThresholdCall] = []
    # Without a threshold hook there is nothing to defer (one registered
    # meanwhile is still called, from this thread).
    token = (
        _deferred_hooks.set(pending)
        if registered_hooks and _THRESHOLD in registered_hooks
        else None
    )
    error: BaseException | None = None
    try:
        record_llm_usage(
            model,
            input_tokens,
            output_tokens,
            cost_usd=cost_usd,
            duration_ms=duration_ms,
            cache_tokens=cache_tokens,
            cache_write_tokens=cache_write_tokens,
            _hold=_hold,
            _priced=_priced,
        )
    except (BudgetExhausted, PricingUnknown) as exc:
        error = exc
    finally:
        if token is not None:
            _deferred_hooks.reset(token)
    for hooks, context, span in pending:
        await adispatch(hooks, context, span)
    if error is not None:
        raise error


def limits_in_force() -> bool:
    """Whether any scope active here has a token or USD limit, local or shared
    (so a pre-flight check could refuse anything)."""
    frame = _get_frame() or active_frame()
    return any(
        ledger.max_tokens is not None or ledger.max_pico is not None for ledger in frame.accounted
    ) or any(budget.has_limit for budget, _ in frame.shared)


_HELD = "held"
_SETTLED = "settled"
_RELEASED = "released"


class Hold:
    """A pre-flight's claim: a call's worst case held on every limited scope in
    force (step, persona, run, enclosing runs) and on every shared pool.

    Made by ``reserve``. ``settle`` records the call's real usage in the scope
    the hold was taken in (replacing the hold); ``release`` frees it when the
    call never happened (failed, cancelled). Either may be called once; later
    calls do nothing. As a context manager, leaving the block releases a hold
    that was not settled. Thread-safe.
    """

    __slots__ = ("frame", "ledgers", "model", "owner", "pico", "shared", "state", "tokens")

    def __init__(
        self, frame: _Frame, model: str, ledgers: tuple[Ledger, ...], tokens: int, pico: int
    ) -> None:
        self.frame = frame
        self.owner: tuple[int, int] | None = None
        """For ``check_budget``'s hold: the thread and task that made it."""
        self.model = model
        self.ledgers = ledgers
        self.tokens = tokens
        """The worst case held, in tokens and picodollars."""
        self.pico = pico
        self.shared: _reservations.SharedHeld = _NO_HOLDS
        self.state = _HELD
        """``held``, then ``settled`` or ``released``."""

    @property
    def held(self) -> bool:
        return self.state is _HELD

    def settle(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cost_usd: float | None = None,
        duration_ms: int = 0,
        cache_tokens: int = 0,
        cache_write_tokens: int = 0,
        model: str | None = None,
    ) -> None:
        """Record the call's usage (as ``record_llm_usage`` does, in the hold's
        scope, for ``model`` or the reserved one) and free the hold."""
        record_llm_usage(
            self.model if model is None else model,
            input_tokens,
            output_tokens,
            cost_usd=cost_usd,
            duration_ms=duration_ms,
            cache_tokens=cache_tokens,
            cache_write_tokens=cache_write_tokens,
            _hold=self,
        )

    async def asettle(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cost_usd: float | None = None,
        duration_ms: int = 0,
        cache_tokens: int = 0,
        cache_write_tokens: int = 0,
        model: str | None = None,
    ) -> None:
        """``settle`` for async code (async threshold hooks awaited here)."""
        await arecord_llm_usage(
            self.model if model is None else model,
            input_tokens,
            output_tokens,
            cost_usd=cost_usd,
            duration_ms=duration_ms,
            cache_tokens=cache_tokens,
            cache_write_tokens=cache_write_tokens,
            _hold=self,
        )

    def release(self) -> None:
        """Free the hold without recording anything: the call never happened."""
        with self.frame.run.lock:
            if self.state is not _HELD:
                return
            self.state = _RELEASED
            for ledger in self.ledgers:
                ledger.held_tokens -= self.tokens
                ledger.held_pico -= self.pico
        if self.shared:
            _reservations.release(self.shared)

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.state is _HELD:
            self.release()

    def __repr__(self) -> str:
        return f"Hold(model={self.model!r}, tokens={self.tokens}, state={self.state!r})"


def reserve(
    model: str,
    estimated_input_tokens: int,
    max_output_tokens: int,
    *,
    price: PriceSource | None = None,
) -> Hold:
    """Pre-flight a model call: hold its worst case on every scope in force.

    The worst case is ``estimated_input_tokens + max_output_tokens`` tokens,
    and their price from ``price`` (default: the configured price source).
    Under the run's lock, every limited scope (step, persona, run, enclosing
    runs) is checked against what it has used plus what other calls in flight
    hold, and the worst case is held on each; then shared pools reserve it.
    Raises ``BudgetExhausted`` (``preflight=True``) naming the first scope,
    innermost first, it cannot fit in, ``PricingUnknown`` when a USD limit is in
    force and no price is known, ``SharedPoolUnavailable`` when a pool cannot
    be reached; nothing stays held when it raises. Settle the returned ``Hold``
    with the call's usage, or release it when the call fails.
    """
    if not (
        type(estimated_input_tokens) is int
        and type(max_output_tokens) is int
        and 0 <= estimated_input_tokens <= _MAXT
        and 0 <= max_output_tokens <= _MAXT
    ):
        _check_count("reserve", "estimated_input_tokens", estimated_input_tokens)
        _check_count("reserve", "max_output_tokens", max_output_tokens)
    if not isinstance(model, str):
        raise TypeError(f"reserve: model must be a string, got {_short(model)}")
    frame = _get_frame() or active_frame()
    # One pass, no generators: a pre-flight runs before every model request.
    limited: tuple[Ledger, ...] = ()
    usd_ledger: Ledger | None = None
    for ledger in frame.accounted:
        if ledger.max_pico is not None:
            limited += (ledger,)
            if usd_ledger is None:
                usd_ledger = ledger
        elif ledger.max_tokens is not None:
            limited += (ledger,)
    worst_tokens = estimated_input_tokens + max_output_tokens
    worst_pico = 0
    shared = frame.shared
    shared_usd = None
    if shared:
        shared_usd = next((b for b, _ in shared if b.max_pico is not None), None)
    if usd_ledger is not None or shared_usd is not None:
        cost = price_call(model, estimated_input_tokens, max_output_tokens, source=price)
        if cost is None:
            if usd_ledger is not None:
                raise PricingUnknown(model, scope=usd_ledger.kind, scope_name=usd_ledger.name)
            assert shared_usd is not None
            raise PricingUnknown(model, scope="shared", scope_name=shared_usd.key)
        worst_pico = round(cost * PICO_PER_USD)
    if limited:
        lock = frame.run.lock
        lock.acquire()
        try:
            for ledger in limited:
                limit = ledger.max_tokens
                if limit is not None:
                    used = ledger.input_tokens + ledger.output_tokens + ledger.held_tokens
                    if used + worst_tokens > limit:
                        raise _exhausted(frame, ledger, "max_tokens", limit, projected=worst_tokens)
                max_pico = ledger.max_pico
                if max_pico is not None and ledger.cost_pico + ledger.held_pico + worst_pico > (
                    max_pico
                ):
                    raise _exhausted(
                        frame,
                        ledger,
                        "max_usd",
                        pico_to_usd(max_pico),
                        projected=pico_to_usd(worst_pico),
                    )
            for ledger in limited:
                ledger.held_tokens += worst_tokens
                ledger.held_pico += worst_pico
        finally:
            lock.release()
    hold = Hold(frame, model, limited, worst_tokens, worst_pico)
    if shared:
        try:
            hold.shared = _reservations.reserve(frame, worst_tokens, worst_pico)
        except BaseException:
            hold.release()
            raise
    return hold


def check_budget(
    model: str,
    estimated_input_tokens: int,
    max_output_tokens: int,
    *,
    price: PriceSource | None = None,
) -> None:
    """Pre-flight for code that reports usage with ``record_llm_usage``: raise
    before a call the active budgets cannot afford, else hold its worst case.

    The same check and hold as ``reserve``; the hold is kept in this context
    and settled by the next ``record_llm_usage`` here (a stream finished in a
    copy of this context included), released by ``release_budget_hold()``
    when the call fails, or replaced by this context's next ``check_budget``.
    """
    owner = _owner()
    previous = _get_pending()
    # A copied context (a task or bound thread started after the pre-flight)
    # sees the same hold: only the thread or task that made it replaces it.
    if previous is not None and previous.state is _HELD and previous.owner == owner:
        previous.release()
    hold = reserve(model, estimated_input_tokens, max_output_tokens, price=price)
    hold.owner = owner
    global _pending_holds
    _pending_holds = True
    _context.pending_hold.set(hold)


def _owner() -> tuple[int, int]:
    """(thread id, id of the running asyncio task or 0)."""
    task = 0
    asyncio = sys.modules.get("asyncio")  # never imported here just to ask
    if asyncio is not None:
        try:
            task = id(asyncio.current_task())
        except RuntimeError:  # no running loop in this thread
            pass
    return threading.get_ident(), task


def release_budget_hold() -> None:
    """Free the hold of this context's last ``check_budget`` when its call never
    happened (a provider error, a cancellation). Does nothing when settled."""
    hold = _get_pending()
    if hold is not None and hold.state is _HELD:
        hold.release()


# The compiled common path (``steptrace._speedups.usage``), when it is built
# and not turned off: ``record_llm_usage`` above stays the reference, which the
# compiled one mirrors and hands every call outside the common case to.
_reference_record_llm_usage = record_llm_usage


def _accelerated() -> Any:
    usage = load_speedup("usage")
    if usage is None:
        return None
    try:
        recorder = usage.Recorder(
            _reference_record_llm_usage,
            {
                "exhausted": _exhausted,
                "active": _context._active,
                "pending": _context.pending_hold,
                "held": _HELD,
                "hooks": registered_hooks,
                "threshold": _THRESHOLD,
                "time": _time,
                "PricingUnknown": PricingUnknown,
                "price_call": price_call,
                "Frame": _context.Frame,
                "PersonaFrame": _context.PersonaFrame,
                "StepFrame": _context.StepFrame,
                "Ledger": Ledger,
                "Hold": Hold,
            },
        )
    except TypeError as exc:  # the classes no longer have the layout it reads
        warnings.warn(f"steptrace: compiled record_llm_usage off: {exc}", RuntimeWarning, 2)
        return None
    return functools.update_wrapper(recorder, _reference_record_llm_usage)


_compiled = _accelerated()
if _compiled is not None:
    record_llm_usage = _compiled
