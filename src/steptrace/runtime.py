"""``@step`` and ``@persona``, and what the code inside them can ask.

The decorators validate their metadata (errors name the step and the field),
register the definition, and wrap the function so that calling it pushes its
frame for exactly as long as its body runs (the seed's frame depth, made
structural; see ``_wrappers``). Entry opens the step's span and fires
``PreStep``; exit files the step in the run's ledger and fires ``PostStep``.
When a budget-exhausted error reaches a step, its boundary decides (see
``_scopes``): ``fail`` re-raises it, ``continue`` returns None (``skipped``),
``escalate`` re-raises it marked escalated (``escalated``) after firing
``OnHandoffEmitted``. An error that is already escalated passes every outer
boundary unchanged; any other error is recorded as ``failed`` and propagates.
``current_step``/``current_persona_name``/``active_step_model_default`` read
the innermost active scopes; ``reset`` starts a context afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, ParamSpec, TypeVar, overload

from . import _context
from ._run import new_default_run
from ._scopes import PersonaScope, StepScope
from ._shared import BudgetSpec, split_budget
from ._wrappers import wrap
from .budget import Budget, pico_to_usd
from .definitions import (
    ErrorBoundary,
    PersonaDefinition,
    StepDefinition,
    function_key,
    register_persona,
    register_step,
)
from .hooks import clear_hooks

__all__ = [
    "ActiveStep",
    "active_step_model_default",
    "current_persona_name",
    "current_step",
    "persona",
    "reset",
    "step",
]

P = ParamSpec("P")
R = TypeVar("R")


# -- the decorators -------------------------------------------------------------


@overload
def step(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def step(
    name: str | StepDefinition | None = None,
    *,
    model: str | None = None,
    budget: BudgetSpec = None,
    error_boundary: ErrorBoundary | str = "fail",
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def step(
    name: Any = None,
    *,
    model: str | None = None,
    budget: BudgetSpec = None,
    error_boundary: ErrorBoundary | str = "fail",
) -> Any:
    """Declare a function as a step: ``@step(model="gpt-4o-mini", budget={"max_tokens": 2000})``.

    ``name`` defaults to the function's name. ``model`` is the default model of
    every LLM call inside the step. ``budget`` is a ``Budget`` or a dict with
    ``max_tokens``/``max_usd``, a ``SharedBudget``, or a list of one local
    budget and shared ones. ``error_boundary`` is ``fail`` (default),
    ``continue`` (the call returns None when the budget runs out) or
    ``escalate``. Works on plain, async, generator and async generator functions
    and methods; ``@step`` without parentheses takes every default. Passing a
    ``StepDefinition`` (e.g. from ``register_step_from_dict``) applies it as is.
    Bad metadata raises ``ValueError``/``TypeError`` naming the step and field.
    """
    if callable(name) and not isinstance(name, str | StepDefinition):
        return _decorate_step(name, None, model, budget, error_boundary)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return _decorate_step(fn, name, model, budget, error_boundary)

    return decorate


def _decorate_step(
    fn: Callable[P, R],
    name: str | StepDefinition | None,
    model: str | None,
    budget: BudgetSpec,
    error_boundary: ErrorBoundary | str,
) -> Callable[P, R]:
    if not callable(fn):
        raise TypeError(f"@step must decorate a function, got {fn!r}")
    function = function_key(fn)
    if isinstance(name, StepDefinition):
        definition = name
    else:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"step `{function}`: name must be a non-empty string, got {name!r}")
        step_name: str = name or str(getattr(fn, "__name__", function))
        owner = f"step `{step_name}`"
        checked, shared = split_budget(budget, owner)
        if model is not None and not isinstance(model, str):
            raise TypeError(f"{owner}: model must be a string, got {model!r}")
        definition = StepDefinition(
            name=step_name,
            function=function,
            model=model,
            max_tokens=None if checked is None else checked.max_tokens,
            max_usd=None if checked is None else checked.max_usd,
            error_boundary=ErrorBoundary.parse(error_boundary, owner),
            shared=shared,
        )
    register_step(definition.function, definition)
    wrapper = wrap(fn, StepScope(definition))
    wrapper.__steptrace_step__ = definition  # type: ignore[attr-defined]
    return wrapper


@overload
def persona(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def persona(
    name: str | None = None, *, budget: BudgetSpec = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def persona(name: Any = None, *, budget: BudgetSpec = None) -> Any:
    """Declare a function as a persona: steps called inside run under its name.

    ``budget`` caps everything done in one invocation, nested steps included.
    Hooks select personas by glob on this name. Works on the same four kinds of
    function as ``@step``.
    """
    if callable(name) and not isinstance(name, str):
        return _decorate_persona(name, None, budget)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return _decorate_persona(fn, name, budget)

    return decorate


def _decorate_persona(fn: Callable[P, R], name: str | None, budget: BudgetSpec) -> Callable[P, R]:
    if not callable(fn):
        raise TypeError(f"@persona must decorate a function, got {fn!r}")
    function = function_key(fn)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"persona `{function}`: name must be a non-empty string, got {name!r}")
    persona_name: str = name or str(getattr(fn, "__name__", function))
    definition = PersonaDefinition(
        name=persona_name,
        function=function,
        budget=budget,
    )
    register_persona(function, definition)
    return wrap(fn, PersonaScope(definition))


# -- introspection ----------------------------------------------------------------


class ActiveStep(NamedTuple):
    """A read-only snapshot of the innermost active step and its usage so far.

    ``input_tokens`` .. ``llm_calls`` are the step's own calls (the seed's
    fields); ``budget_pct`` is the use of its budget by the step and its nested
    steps, ``None`` without a budget.
    """

    name: str
    function: str
    model: str | None
    persona: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    llm_calls: int
    last_model: str | None
    budget: Budget | None
    budget_pct: float | None
    error_boundary: ErrorBoundary


def current_step() -> ActiveStep | None:
    """The innermost active step of this context, or None outside any step."""
    frame = _context.get_frame()
    step_frame = None if frame is None else frame.step
    if step_frame is None:
        return None
    definition = step_frame.definition
    with step_frame.run.lock:
        return ActiveStep(
            name=definition.name,
            function=definition.function,
            model=definition.model,
            persona=step_frame.persona_name,
            input_tokens=step_frame.own_input_tokens,
            output_tokens=step_frame.own_output_tokens,
            cost_usd=pico_to_usd(step_frame.own_cost_pico),
            llm_calls=step_frame.own_llm_calls,
            last_model=step_frame.last_model,
            budget=None if step_frame.ledger is None else definition.budget,
            budget_pct=None if step_frame.ledger is None else step_frame.ledger.budget_pct(),
            error_boundary=definition.error_boundary,
        )


def current_persona_name() -> str | None:
    """The innermost active persona's name, or None."""
    frame = _context.get_frame()
    return None if frame is None or frame.persona is None else frame.persona.name


def active_step_model_default() -> str | None:
    """The innermost active step's declared model: the default for LLM calls in it."""
    frame = _context.get_frame()
    return None if frame is None or frame.step is None else frame.step.definition.model


def reset() -> None:
    """Start this context afresh (for tests): a new default run with no active
    steps or personas, and no hooks. Registered definitions and span
    processors are kept, like the imports that created them."""
    new_default_run()
    clear_hooks()
