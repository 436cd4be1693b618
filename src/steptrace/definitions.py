"""Step and persona definitions, their validation, and the registries.

A ``StepDefinition`` is what ``@step`` or a manifest declares: name, function,
default model, token and USD budget, error boundary. Unlike the seed, which drops
malformed metadata silently, every field is validated and a bad one raises
``ValueError``/``TypeError`` naming the step and the field: a budget that
silently disappears is a spending bug. The registries map function names to
definitions (process-wide, like the decorators that fill them) for manifests
and introspection; a decorated function keeps its own definition and never
looks it up by name.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ._records import FrozenRecord
from ._shared import BudgetSpec, SharedBudget, split_budget
from .budget import Budget

__all__ = [
    "ErrorBoundary",
    "PersonaDefinition",
    "StepDefinition",
    "is_tracked_function",
    "register_persona",
    "register_persona_from_dict",
    "register_step",
    "register_step_from_dict",
    "step_definition_for",
]


class ErrorBoundary(enum.StrEnum):
    """What a step does when a budget-exhausted error reaches it.

    ``fail`` records ``failed`` and re-raises unchanged; ``continue`` records
    ``skipped`` and returns None; ``escalate`` records ``escalated`` and re-raises
    the error marked escalated. Other errors always propagate.
    """

    FAIL = "fail"
    CONTINUE = "continue"
    ESCALATE = "escalate"

    @classmethod
    def parse(cls, value: object, owner: str) -> ErrorBoundary:
        if isinstance(value, ErrorBoundary):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        raise ValueError(
            f"{owner}: error_boundary must be one of 'fail', 'continue', 'escalate', got {value!r}"
        )


class StepDefinition(FrozenRecord):
    """A declared step (the seed's fields, then the shared budgets it draws
    from). Build it through ``@step`` or ``register_step_from_dict``;
    constructing it directly validates too."""

    __slots__ = ("error_boundary", "function", "max_tokens", "max_usd", "model", "name", "shared")
    _fields = ("name", "function", "model", "max_tokens", "max_usd", "error_boundary", "shared")
    name: str
    function: str
    model: str | None
    max_tokens: int | None
    max_usd: float | None
    error_boundary: ErrorBoundary
    shared: tuple[SharedBudget, ...]

    def __init__(
        self,
        name: str,
        function: str,
        model: str | None = None,
        max_tokens: int | None = None,
        max_usd: float | None = None,
        error_boundary: ErrorBoundary | str = ErrorBoundary.FAIL,
        shared: tuple[SharedBudget, ...] = (),
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"step definition: name must be a non-empty string, got {name!r}")
        owner = f"step `{name}`"
        if not isinstance(function, str) or not function:
            raise ValueError(f"{owner}: function must be a non-empty string, got {function!r}")
        if model is not None and not isinstance(model, str):
            raise TypeError(f"{owner}: model must be a string, got {model!r}")
        budget = Budget.coerce({"max_tokens": max_tokens, "max_usd": max_usd}, owner)
        assert budget is not None
        self._set("name", name)
        self._set("function", function)
        self._set("model", model or None)  # an empty model means no model
        self._set("max_tokens", budget.max_tokens)
        self._set("max_usd", budget.max_usd)
        self._set("error_boundary", ErrorBoundary.parse(error_boundary, owner))
        self._set("shared", _check_shared(shared, owner))

    @property
    def budget(self) -> Budget:
        return Budget(self.max_tokens, self.max_usd)

    @property
    def boundary(self) -> ErrorBoundary:
        """The seed's name for ``error_boundary``."""
        return self.error_boundary


def _check_shared(shared: object, owner: str) -> tuple[SharedBudget, ...]:
    if not isinstance(shared, tuple) or not all(isinstance(s, SharedBudget) for s in shared):
        raise TypeError(f"{owner}: shared must be a tuple of SharedBudget, got {shared!r}")
    return shared


class PersonaDefinition(FrozenRecord):
    """A declared persona: a name and an optional budget for each invocation
    (a local ``Budget`` in ``budget``, shared budgets in ``shared``; ``budget``
    also accepts what ``@persona(budget=...)`` does and splits it)."""

    __slots__ = ("budget", "function", "name", "shared")
    _fields = ("name", "function", "budget", "shared")
    name: str
    function: str
    budget: Budget | None
    shared: tuple[SharedBudget, ...]

    def __init__(
        self,
        name: str,
        function: str,
        budget: BudgetSpec = None,
        shared: tuple[SharedBudget, ...] = (),
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"persona definition: name must be a non-empty string, got {name!r}")
        owner = f"persona `{name}`"
        local, more = split_budget(budget, owner)
        self._set("name", name)
        self._set("function", function)
        self._set("budget", local)
        self._set("shared", (*more, *_check_shared(shared, owner)))


_lock = threading.Lock()
_steps: dict[str, StepDefinition] = {}
_personas: dict[str, PersonaDefinition] = {}


def register_step(function: str, definition: StepDefinition) -> None:
    """Register (or replace) the step definition for a function name."""
    if not isinstance(definition, StepDefinition):
        raise TypeError(f"register_step: expected a StepDefinition, got {definition!r}")
    with _lock:
        _steps[function] = definition


def register_persona(function: str, definition: PersonaDefinition) -> None:
    """Register (or replace) the persona definition for a function name."""
    if not isinstance(definition, PersonaDefinition):
        raise TypeError(f"register_persona: expected a PersonaDefinition, got {definition!r}")
    with _lock:
        _personas[function] = definition


_STEP_KEYS = frozenset({"name", "model", "budget", "error_boundary"})
# Fields upstream Harn's step metadata carries that steptrace does not act on:
# a manifest written for Harn loads, and these are ignored (as the seed ignores
# every key it does not use). Other keys still fail: a misspelt budget must not
# vanish silently.
_HARN_STEP_KEYS = frozenset({"function", "approval", "receipt", "retry", "line"})
_PERSONA_KEYS = frozenset({"name", "budget"})


def _check_manifest(
    kind: str,
    function: object,
    metadata: object,
    allowed: frozenset[str],
    ignored: frozenset[str] = frozenset(),
) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(function, str) or not function:
        raise TypeError(f"register_{kind}_from_dict: expected (function_name, metadata_dict)")
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"register_{kind}_from_dict: metadata for `{function}` must be a dict, "
            f"got {type(metadata).__name__}"
        )
    unknown = sorted(set(metadata) - allowed - ignored)
    if unknown:
        also = f" (Harn's {sorted(ignored)} are accepted and ignored)" if ignored else ""
        raise ValueError(
            f"{kind} `{metadata.get('name', function)}`: unknown field(s) {unknown}; "
            f"expected {sorted(allowed)}{also}"
        )
    return function, metadata


def register_step_from_dict(function: str, metadata: Mapping[str, Any]) -> StepDefinition:
    """Register a step from manifest metadata (the seed's ``__register_step``).

    Keys: ``name`` (defaults to the function name), ``model`` (empty means none),
    ``budget`` (``{"max_tokens": ..., "max_usd": ...}``), ``error_boundary``.
    Harn's other step metadata (``function``, ``approval``, ``receipt``,
    ``retry``, ``line``) is accepted and ignored; any other key raises
    ``ValueError`` naming it. Returns the registered definition.
    """
    function, metadata = _check_manifest("step", function, metadata, _STEP_KEYS, _HARN_STEP_KEYS)
    name = metadata.get("name", function)
    if not isinstance(name, str) or not name:
        raise TypeError(f"step `{function}`: name must be a non-empty string, got {name!r}")
    budget = Budget.coerce(metadata.get("budget"), f"step `{name}`")
    definition = StepDefinition(
        name=name,
        function=function,
        model=metadata.get("model"),
        max_tokens=budget.max_tokens if budget else None,
        max_usd=budget.max_usd if budget else None,
        error_boundary=metadata.get("error_boundary", ErrorBoundary.FAIL),
    )
    register_step(function, definition)
    return definition


def register_persona_from_dict(function: str, metadata: Mapping[str, Any]) -> PersonaDefinition:
    """Register a persona from manifest metadata: ``name`` and optional ``budget``."""
    function, metadata = _check_manifest("persona", function, metadata, _PERSONA_KEYS)
    name = metadata.get("name", function)
    if not isinstance(name, str) or not name:
        raise TypeError(f"persona `{function}`: name must be a non-empty string, got {name!r}")
    definition = PersonaDefinition(name=name, function=function, budget=metadata.get("budget"))
    register_persona(function, definition)
    return definition


def function_key(fn: Callable[..., Any]) -> str:
    """The registry key of a Python callable: its qualified name."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def step_definition_for(function: str | Callable[..., Any]) -> StepDefinition | None:
    """The step definition registered for a function name or decorated callable."""
    if not isinstance(function, str):
        attached = getattr(function, "__steptrace_step__", None)
        if isinstance(attached, StepDefinition):
            return attached
        function = function_key(function)
    with _lock:
        return _steps.get(function)


def is_tracked_function(function_name: str) -> bool:
    """True when a step or persona is registered under this function name."""
    with _lock:
        return function_name in _steps or function_name in _personas
