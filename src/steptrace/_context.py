"""Where the active run, persona and step live: one ContextVar and the frames in it.

The seed keeps thread-local stacks of active steps and personas. Here the stack
is a linked list of immutable-parent ``Frame`` objects, and a single ContextVar
holds the innermost one, so each asyncio task and thread sees its own stack and
pushing a step is one ``ContextVar.set`` (popped by resetting the token in a
``finally``). Every frame links to its run's root frame and to the nearest step
and persona, so the hot path never walks the stack to answer "which step am I
in". Frames also carry the accounting counters; all counters of one run are
guarded by that run's lock, so usage from threads and tasks sharing a step adds
up exactly.

``snapshot_context``/``restore_context`` are the seed's take/restore of the
active stacks; ``bind`` carries the current context into threads and executors.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, ParamSpec, TypeVar

from .budget import PICO_PER_USD, Budget, Usage, usd_to_pico

if TYPE_CHECKING:
    from ._run import Run
    from .definitions import PersonaDefinition, StepDefinition
    from .spans import Span

P = ParamSpec("P")
R = TypeVar("R")

FrameKind = Literal["run", "persona", "step", "span"]


class Frame:
    """One scope on the active stack: the run's root, a persona, a step, or a
    user span (a frame that never has a budget).

    ``input_tokens`` .. ``llm_calls`` are totals for the whole subtree (what its
    budget is checked against). ``accounted`` lists, innermost first, the frames a
    usage record must update: every enclosing frame with a budget, then the run.
    """

    __slots__ = (
        "accounted",
        "cost_pico",
        "fired_thresholds",
        "input_tokens",
        "kind",
        "llm_calls",
        "max_pico",
        "max_tokens",
        "name",
        "output_tokens",
        "parent",
        "persona",
        "root",
        "run",
        "span",
        "step",
    )

    def __init__(
        self,
        kind: FrameKind,
        name: str,
        parent: Frame | None,
        run: Run,
        span: Span,
        budget: Budget | None,
    ) -> None:
        self.kind: FrameKind = kind
        self.name = name
        self.parent = parent
        self.run = run
        self.span = span
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_pico = 0
        self.llm_calls = 0
        self.max_tokens = budget.max_tokens if budget else None
        self.max_pico = (
            usd_to_pico(budget.max_usd) if budget and budget.max_usd is not None else None
        )
        self.fired_thresholds: set[int] | None = None
        if parent is None:
            self.root: Frame = self
            self.step: StepFrame | None = None
            self.persona: PersonaFrame | None = None
            self.accounted: tuple[Frame, ...] = (self,)
        else:
            self.root = parent.root
            self.step = parent.step
            self.persona = parent.persona
            has_budget = self.max_tokens is not None or self.max_pico is not None
            self.accounted = (self, *parent.accounted) if has_budget else parent.accounted

    @property
    def has_budget(self) -> bool:
        return self.max_tokens is not None or self.max_pico is not None

    @property
    def budget(self) -> Budget | None:
        if not self.has_budget:
            return None
        max_usd = None if self.max_pico is None else self.max_pico / PICO_PER_USD
        return Budget(self.max_tokens, max_usd)

    def usage(self) -> Usage:
        return Usage(
            self.input_tokens, self.output_tokens, self.cost_pico / PICO_PER_USD, self.llm_calls
        )

    def budget_pct(self) -> float | None:
        """Percent of the budget used: the larger of the token and USD fractions."""
        pct: float | None = None
        if self.max_tokens is not None:
            pct = 100.0 * (self.input_tokens + self.output_tokens) / self.max_tokens
        if self.max_pico is not None:
            if self.max_pico == 0:
                usd_pct = 0.0 if self.cost_pico == 0 else float("inf")
            else:
                usd_pct = 100.0 * self.cost_pico / self.max_pico
            pct = usd_pct if pct is None else max(pct, usd_pct)
        return pct


class PersonaFrame(Frame):
    __slots__ = ("definition",)

    def __init__(self, definition: PersonaDefinition, parent: Frame, run: Run, span: Span) -> None:
        super().__init__("persona", definition.name, parent, run, span, definition.budget)
        self.definition = definition
        self.persona = self


class StepFrame(Frame):
    """A step invocation. ``own_*`` are this step's own calls (the seed's
    per-step accounting, what its ledger row shows); the inherited counters
    include nested steps too."""

    __slots__ = (
        "definition",
        "last_model",
        "own_cost_pico",
        "own_input_tokens",
        "own_llm_calls",
        "own_output_tokens",
    )

    def __init__(self, definition: StepDefinition, parent: Frame, run: Run, span: Span) -> None:
        budget = (
            Budget(definition.max_tokens, definition.max_usd)
            if definition.max_tokens is not None or definition.max_usd is not None
            else None
        )
        super().__init__("step", definition.name, parent, run, span, budget)
        self.definition = definition
        self.step = self
        self.own_input_tokens = 0
        self.own_output_tokens = 0
        self.own_cost_pico = 0
        self.own_llm_calls = 0
        self.last_model: str | None = None

    @property
    def persona_name(self) -> str | None:
        return None if self.persona is None else self.persona.name


_active: contextvars.ContextVar[Frame | None] = contextvars.ContextVar(
    "steptrace_active_frame", default=None
)

get_frame = _active.get
set_frame = _active.set
reset_frame = _active.reset


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
            if frame.kind == "step":
                names.append(frame.name)
            frame = frame.parent
        return names[::-1]

    @property
    def personas(self) -> list[str]:
        """Names of the detached personas, outermost first."""
        names: list[str] = []
        frame = self._frame
        while frame is not None:
            if frame.kind == "persona":
                names.append(frame.name)
            frame = frame.parent
        return names[::-1]


def snapshot_context() -> ContextSnapshot:
    """Detach the active step and persona stacks (the seed's take).

    Afterwards this context is in the same run but in no step or persona, until
    ``restore_context`` puts the stacks back.
    """
    frame = _active.get()
    _active.set(None if frame is None else frame.root)
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
