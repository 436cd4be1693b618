"""Where the active run, persona and step live: one ContextVar and the frames in it.

The seed keeps thread-local stacks of active steps and personas. Here the stack
is a linked list of immutable-parent ``Frame`` objects, and a single ContextVar
holds the innermost one, so each asyncio task and thread sees its own stack and
pushing a step is one ``ContextVar.set`` (popped by resetting the token in a
``finally``). Every frame links to its run's root frame and to the nearest step
and persona, so the hot path never walks the stack to answer "which step am I
in", and to the budget ledgers a usage record must update. All counters of one
run are guarded by that run's lock, so usage from threads and tasks sharing a
step adds up exactly.

``snapshot_context``/``restore_context`` are the seed's take/restore of the
active stacks; ``bind`` carries the current context into threads and executors.
When the compiled accelerator ``steptrace._speedups.step`` is loaded, it is
told the frames' layout here, and ``span_frame`` is its compiled twin (the
Python function below stays the reference, as ``reference_span_frame``).
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable
from time import time_ns
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from . import _speedups
from . import spans as _spans
from .budget import PICO_PER_USD, Budget, Ledger, usd_to_pico
from .spans import Span, SpanKind

# Bound here for the hot path; rebound in a forked child after ``spans`` reseeds.
_span_ids = _spans.span_ids


def _rebind_span_ids() -> None:
    global _span_ids
    _span_ids = _spans.span_ids


os.register_at_fork(after_in_child=_rebind_span_ids)

if TYPE_CHECKING:
    from ._run import Run
    from ._shared import SharedBudget
    from .definitions import PersonaDefinition, StepDefinition

SharedInForce = tuple[tuple["SharedBudget", "Frame"], ...]
"""The shared budgets a frame's usage draws from, innermost first, each with
the frame that declared it."""

P = ParamSpec("P")
R = TypeVar("R")


class Frame(Span):
    """One scope on the active stack, and its span: the run's root, a persona, a
    step, or a user span.

    ``accounted`` lists, innermost first, the budget ledgers a usage record must
    update: this frame's own (the run's root and personas always have one, steps
    only when they have a budget, user spans never) and every enclosing one.
    ``shared`` lists likewise the shared budgets in force (empty almost always:
    the accounting tests it once and otherwise never looks at shared budgets).
    Only what the hot path reads is stored; the rest is derived.
    """

    __slots__ = ("accounted", "parent", "run", "shared", "step")

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        parent: Frame | None,
        run: Run,
        ledger: Ledger | None = None,
        metadata: dict[str, Any] | None = None,
        shared: tuple[SharedBudget, ...] = (),
    ) -> None:
        Span.__init__(
            self, name, kind, run.id, None if parent is None else parent.span_id, metadata
        )
        self.parent = parent
        self.run = run
        own: SharedInForce = tuple((budget, self) for budget in shared) if shared else ()
        if parent is None:
            self.step: StepFrame | None = None
            self.accounted: tuple[Ledger, ...] = () if ledger is None else (ledger,)
            self.shared: SharedInForce = own
        else:
            self.step = parent.step
            self.accounted = parent.accounted if ledger is None else (ledger, *parent.accounted)
            self.shared = (*own, *parent.shared) if own else parent.shared

    @property
    def ledger(self) -> Ledger | None:
        """This frame's own budget ledger, if it keeps one."""
        accounted = self.accounted
        return accounted[0] if accounted and accounted[0].owner is self else None

    @property
    def persona(self) -> PersonaFrame | None:
        """The innermost persona frame enclosing (or being) this frame."""
        frame: Frame | None = self
        while frame is not None:
            if isinstance(frame, PersonaFrame):
                return frame
            frame = frame.parent
        return None


class PersonaFrame(Frame):
    __slots__ = ("definition",)

    def __init__(self, definition: PersonaDefinition, parent: Frame) -> None:
        # A persona always keeps a ledger: its span reports its subtree's usage.
        ledger = Ledger("persona", definition.name, *budget_limits(definition.budget), self)
        super().__init__(
            definition.name,
            SpanKind.PERSONA,
            parent,
            parent.run,
            ledger,
            {"persona": definition.name},
            definition.shared,
        )
        self.definition = definition


class StepFrame(Frame):
    """A step invocation: its frame, its span and, once ended, its ledger row.

    ``own_*`` are this step's own calls (the seed's per-step accounting, what
    its ledger row shows). The span metadata carries the seed's keys, written
    on demand from the counters so the hot path never builds a dict. Made only
    by ``step_frame``, on every step call.
    """

    __slots__ = (
        "definition",
        "last_model",
        "outcome",
        "own_cost_pico",
        "own_input_tokens",
        "own_llm_calls",
        "own_output_tokens",
        "own_unpriced_calls",
    )

    kind = SpanKind.STEP  # a constant for steps: shadows the inherited slot
    definition: StepDefinition
    last_model: str | None
    outcome: str | None
    """The ledger status once ended: completed, failed, skipped, escalated."""
    own_input_tokens: int
    own_output_tokens: int
    own_cost_pico: int
    own_llm_calls: int
    own_unpriced_calls: int
    """Of ``own_llm_calls``, those whose cost is unknown (not in the cost)."""

    # Read from what the frame links to, not stored: a step call assigns
    # every stored slot, and these three are derived exactly.
    @property
    def name(self) -> str:  # type: ignore[override]
        return self.definition.name

    @property
    def run_id(self) -> str:  # type: ignore[override]
        return self.run.id

    @property
    def parent_id(self) -> int | None:  # type: ignore[override]
        parent = self.parent
        return None if parent is None else parent.span_id

    @property
    def persona_name(self) -> str | None:
        return None if self.persona is None else self.persona.name

    @property
    def metadata(self) -> dict[str, Any]:
        metadata = Frame.metadata.fget(self)  # type: ignore[attr-defined]
        assert isinstance(metadata, dict)
        if self.persona is not None:
            metadata["persona"] = self.persona.name
        if self.definition.model is not None:
            metadata["model"] = self.definition.model
        if self.outcome is not None:
            metadata["status"] = self.outcome
            metadata["llm_calls"] = self.own_llm_calls
            metadata["input_tokens"] = self.own_input_tokens
            metadata["output_tokens"] = self.own_output_tokens
            metadata["cost_usd"] = self.own_cost_pico / PICO_PER_USD
            if self.own_unpriced_calls:
                metadata["unpriced_calls"] = self.own_unpriced_calls
        return metadata


def step_frame(definition: StepDefinition, parent: Frame, limits: Limits) -> StepFrame:
    """A new frame for a call of the step ``definition`` inside ``parent``.

    The only way a ``StepFrame`` is made, on every step call: a plain function
    filling the slots of a bare instance. With the three fields derived rather
    than stored, a step call takes 4% fewer instructions than with the
    ``__init__`` this replaced (``benchmarks/bench_instructions.py``)."""
    frame: StepFrame = _new(StepFrame)
    frame.span_id = next(_span_ids)
    frame.start_ns = time_ns()
    frame.end_ns = None
    frame._metadata = None
    frame.status = "unset"
    frame.error = None
    frame.parent = parent
    frame.run = parent.run
    frame.step = frame
    if limits is None:
        frame.accounted = parent.accounted
    else:
        frame.accounted = (Ledger("step", definition.name, *limits, frame), *parent.accounted)
    shared = definition.shared
    frame.shared = (*((b, frame) for b in shared), *parent.shared) if shared else parent.shared
    frame.definition = definition
    frame.own_input_tokens = 0
    frame.own_output_tokens = 0
    frame.own_cost_pico = 0
    frame.own_llm_calls = 0
    frame.own_unpriced_calls = 0
    frame.last_model = None
    frame.outcome = None
    return frame


def span_frame(name: str, kind: SpanKind, parent: Frame, metadata: dict[str, Any] | None) -> Frame:
    """A new frame for a user span (``span()``, ``open_span``) inside ``parent``:
    no budget or shared pool of its own, so usage recorded under it goes to
    ``parent``'s. Fills a bare instance's slots, as ``step_frame`` does, at
    about half the instructions of ``Frame(...)``: every model request and
    agent tool call opens one."""
    frame: Frame = _new(Frame)
    frame.span_id = next(_span_ids)
    frame.parent_id = parent.span_id
    run = parent.run
    frame.run_id = run.id
    frame.name = name
    frame.kind = kind
    frame.start_ns = time_ns()
    frame.end_ns = None
    frame._metadata = metadata or None
    frame.status = "unset"
    frame.error = None
    frame.parent = parent
    frame.run = run
    frame.step = parent.step
    frame.accounted = parent.accounted
    frame.shared = parent.shared
    return frame


_new = object.__new__
reference_span_frame = span_frame
"""The pure-Python ``span_frame``, which the compiled one mirrors."""

_compiled = _speedups.load("step")
if _compiled is not None:
    # The frames' layout, and globals() for _span_ids (rebound after fork).
    _compiled.configure_frames(Frame, StepFrame, globals(), reference_span_frame)
    span_frame = _compiled.span_frame

Limits = tuple[int | None, int | None] | None
"""A step's (max_tokens, max picodollars), computed once per definition; None
for a step without a budget."""


def budget_limits(budget: Budget | None) -> tuple[int | None, int | None]:
    """(max_tokens, max_usd in picodollars) of a budget."""
    if budget is None:
        return None, None
    max_pico = None if budget.max_usd is None else usd_to_pico(budget.max_usd)
    return budget.max_tokens, max_pico


def step_limits(definition: StepDefinition) -> Limits:
    if definition.max_tokens is None and definition.max_usd is None:
        return None
    return budget_limits(definition.budget)


_active: contextvars.ContextVar[Frame | None] = contextvars.ContextVar(
    "steptrace_active_frame", default=None
)

get_frame = _active.get
set_frame = _active.set
reset_frame = _active.reset

pending_hold: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "steptrace_pending_hold", default=None
)
"""The ``Hold`` of this context's last ``check_budget``, settled by the next
``record_llm_usage`` here. The hold is mutable, so a record made in a copy of
this context (a stream finished in a callback) still marks it settled."""


class ContextSnapshot:
    """The detached step and persona stacks of one context (opaque)."""

    __slots__ = ("_frame",)

    def __init__(self, frame: Frame | None) -> None:
        self._frame = frame

    @property
    def steps(self) -> list[str]:
        """Names of the detached steps, outermost first."""
        names: list[str] = []
        frame = self._frame
        while frame is not None:
            if frame.kind is SpanKind.STEP:
                names.append(frame.name)
            frame = frame.parent
        return names[::-1]

    @property
    def personas(self) -> list[str]:
        """Names of the detached personas, outermost first."""
        names: list[str] = []
        frame = self._frame
        while frame is not None:
            if frame.kind is SpanKind.PERSONA:
                names.append(frame.name)
            frame = frame.parent
        return names[::-1]


def snapshot_context() -> ContextSnapshot:
    """Detach the active step and persona stacks (the seed's take).

    Afterwards this context is in the same run but in no step or persona, until
    ``restore_context`` puts the stacks back.
    """
    frame = _active.get()
    _active.set(None if frame is None else frame.run.root)
    return ContextSnapshot(frame)


def restore_context(snapshot: ContextSnapshot) -> None:
    """Put back stacks detached by ``snapshot_context``, replacing the current ones."""
    if not isinstance(snapshot, ContextSnapshot):
        raise TypeError(f"restore_context: expected a ContextSnapshot, got {snapshot!r}")
    _active.set(snapshot._frame)


def bind(fn: Callable[P, R]) -> Callable[P, R]:
    """Return ``fn`` bound to the current run, step and persona.

    For ``ThreadPoolExecutor.submit`` and ``loop.run_in_executor``, which do not
    copy the caller's context (``asyncio.to_thread`` does). Each call runs in a
    fresh copy of the context captured here, so one bound callable can run in
    many threads at once; usage it records goes to the captured step.
    """
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    return bound
