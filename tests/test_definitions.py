"""Step and persona definitions: validation, manifests, registries, wrapping."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import steptrace
from steptrace import (
    Budget,
    ErrorBoundary,
    PersonaDefinition,
    StepDefinition,
    is_tracked_function,
    register_persona_from_dict,
    register_step_from_dict,
    step_definition_for,
)


def _body() -> None:
    pass


# Each entry point, given a budget dict, registers under the owner it names.
def _via_step(budget: Any) -> None:
    steptrace.step(name="v_step", budget=budget)(_body)


def _via_persona(budget: Any) -> None:
    steptrace.persona(name="v_persona", budget=budget)(_body)


def _via_step_manifest(budget: Any) -> None:
    register_step_from_dict("v_step_fn", {"name": "v_step_m", "budget": budget})


def _via_persona_manifest(budget: Any) -> None:
    register_persona_from_dict("v_persona_fn", {"name": "v_persona_m", "budget": budget})


def _via_budget(budget: Any) -> None:
    Budget(**budget)


ENTRY_POINTS: list[tuple[Callable[[Any], None], str]] = [
    (_via_step, "step `v_step`"),
    (_via_persona, "persona `v_persona`"),
    (_via_step_manifest, "step `v_step_m`"),
    (_via_persona_manifest, "persona `v_persona_m`"),
    (_via_budget, "Budget"),
]
_ids = ["step", "persona", "step_manifest", "persona_manifest", "Budget"]

BAD_BUDGETS: list[tuple[str, Any, type[Exception]]] = [
    ("max_tokens", 0, ValueError),
    ("max_tokens", -1, ValueError),
    ("max_tokens", 1.5, TypeError),
    ("max_tokens", "10", TypeError),
    ("max_tokens", True, TypeError),
    ("max_usd", -1, ValueError),
    ("max_usd", math.nan, ValueError),
    ("max_usd", math.inf, ValueError),
    ("max_usd", "x", TypeError),
    ("max_usd", False, TypeError),
]


@pytest.mark.parametrize(("field", "value", "error"), BAD_BUDGETS)
@pytest.mark.parametrize(("register", "owner"), ENTRY_POINTS, ids=_ids)
def test_bad_budget_is_rejected_naming_owner_and_field(
    register: Callable[[Any], None], owner: str, field: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        register({field: value})
    message = str(info.value)
    assert owner in message
    assert f"budget.{field}" in message


def test_failed_registration_registers_nothing() -> None:
    def never_registered() -> None:
        pass

    with pytest.raises(ValueError, match="max_tokens"):
        steptrace.step(budget={"max_tokens": 0})(never_registered)
    assert not is_tracked_function(never_registered.__qualname__)
    with pytest.raises(ValueError, match="error_boundary"):
        register_step_from_dict("bad_manifest_fn", {"error_boundary": "retry"})
    assert not is_tracked_function("bad_manifest_fn")


@pytest.mark.parametrize("boundary", ["retry", "Fail", "", None, 1])
def test_bad_error_boundary(boundary: Any) -> None:
    for attempt in (
        lambda: steptrace.step(name="eb_step", error_boundary=boundary)(_body),
        lambda: register_step_from_dict("eb_fn", {"name": "eb_step", "error_boundary": boundary}),
        lambda: StepDefinition(name="eb_step", function="eb_fn", error_boundary=boundary),
    ):
        with pytest.raises(ValueError, match="error_boundary") as info:
            attempt()
        assert "step `eb_step`" in str(info.value)
        assert "'fail', 'continue', 'escalate'" in str(info.value)


def test_unknown_manifest_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['retries'\]") as info:
        register_step_from_dict("uk_fn", {"name": "uk_step", "retries": 3})
    assert "step `uk_step`" in str(info.value)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['model'\]") as info:
        register_persona_from_dict("uk_persona_fn", {"model": "m"})
    assert "persona `uk_persona_fn`" in str(info.value)
    with pytest.raises(ValueError, match=r"unknown budget field\(s\) \['max_token'\]") as info:
        register_step_from_dict("uk_fn", {"name": "uk_step", "budget": {"max_token": 5}})
    assert "step `uk_step`" in str(info.value)


@pytest.mark.parametrize("metadata", [None, [("name", "x")], "name=x", 3])
def test_non_dict_metadata(metadata: Any) -> None:
    with pytest.raises(TypeError, match=r"metadata for `nd_step_fn` must be a dict"):
        register_step_from_dict("nd_step_fn", metadata)
    with pytest.raises(TypeError, match=r"metadata for `nd_persona_fn` must be a dict"):
        register_persona_from_dict("nd_persona_fn", metadata)


@pytest.mark.parametrize("budget", [100, "100", [100]])
def test_non_dict_budget(budget: Any) -> None:
    with pytest.raises(TypeError, match=r"step `nb`: budget must be a Budget or a dict"):
        register_step_from_dict("nb_fn", {"name": "nb", "budget": budget})
    with pytest.raises(TypeError, match=r"persona `nbp`: budget must be a Budget or a dict"):
        steptrace.persona(name="nbp", budget=budget)(_body)


def test_empty_or_bad_name() -> None:
    def named() -> None:
        pass

    attempts: list[tuple[Callable[[], object], str]] = [
        (lambda: steptrace.step(name="")(named), "step `"),
        (lambda: steptrace.persona(name="")(named), "persona `"),
        (lambda: register_step_from_dict("en_fn", {"name": ""}), "step `en_fn`"),
        (lambda: register_persona_from_dict("en_fn", {"name": ""}), "persona `en_fn`"),
        (lambda: register_step_from_dict("en_fn", {"name": 5}), "step `en_fn`"),
        (lambda: StepDefinition(name="", function="f"), "step definition"),
        (lambda: PersonaDefinition(name="", function="f"), "persona definition"),
    ]
    for attempt, owner in attempts:
        with pytest.raises(
            (ValueError, TypeError), match="name must be a non-empty string"
        ) as info:
            attempt()
        assert owner in str(info.value)
    with pytest.raises(TypeError, match="register_step_from_dict"):
        register_step_from_dict("", {})


def test_non_string_model() -> None:
    with pytest.raises(TypeError, match=r"step `ms`: model must be a string"):
        steptrace.step(name="ms", model=3)(_body)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"step `ms`: model must be a string"):
        register_step_from_dict("ms_fn", {"name": "ms", "model": ["m"]})


def test_valid_manifest_registers() -> None:
    definition = register_step_from_dict(
        "plan_step",
        {
            "name": "plan",
            "model": "claude-haiku-4-5",
            "error_boundary": "continue",
            "budget": {"max_tokens": 100, "max_usd": 0.05},
        },
    )
    assert definition == StepDefinition(
        name="plan",
        function="plan_step",
        model="claude-haiku-4-5",
        max_tokens=100,
        max_usd=0.05,
        error_boundary=ErrorBoundary.CONTINUE,
    )
    assert definition.budget == Budget(max_tokens=100, max_usd=0.05)
    assert definition.boundary is ErrorBoundary.CONTINUE
    assert step_definition_for("plan_step") == definition
    assert is_tracked_function("plan_step")
    assert not is_tracked_function("plan")  # registered by function, not by step name

    # The manifest's definition drives a decorated function as is.
    @steptrace.step(definition)
    def plan_impl() -> str | None:
        assert steptrace.active_step_model_default() == "claude-haiku-4-5"
        steptrace.record_llm_usage("claude-haiku-4-5", 60, 60, cost_usd=0.0)
        return "unreachable"

    with steptrace.run() as run:
        assert plan_impl() is None  # continue boundary
    assert [(s.name, s.status) for s in run.completed_steps] == [("plan", "skipped")]


def test_manifest_defaults() -> None:
    step_def = register_step_from_dict("defaults_fn", {})
    assert step_def == StepDefinition(name="defaults_fn", function="defaults_fn")
    assert (step_def.model, step_def.max_tokens, step_def.max_usd) == (None, None, None)
    assert step_def.error_boundary is ErrorBoundary.FAIL
    persona_def = register_persona_from_dict("pfn", {"budget": {"max_usd": 2}})
    assert persona_def == PersonaDefinition(name="pfn", function="pfn", budget=Budget(None, 2.0))
    assert is_tracked_function("pfn")
    assert not is_tracked_function("never-registered")


def test_empty_model_means_no_model() -> None:
    assert register_step_from_dict("em_fn", {"model": ""}).model is None

    @steptrace.step(model="")
    def modelless() -> str | None:
        return steptrace.active_step_model_default()

    definition = step_definition_for(modelless)
    assert definition is not None
    assert definition.model is None
    with steptrace.run() as run:
        assert modelless() is None
    (span,) = [s for s in run.spans if s.name == "modelless"]
    assert "model" not in span.metadata


def test_whole_float_tokens_accepted() -> None:
    definition = register_step_from_dict("f100", {"budget": {"max_tokens": 100.0}})
    assert definition.max_tokens == 100
    assert type(definition.max_tokens) is int
    budget = Budget(max_tokens=100.0)  # type: ignore[arg-type]
    assert budget.max_tokens == 100
    assert type(budget.max_tokens) is int
    assert Budget(max_usd=0).max_usd == 0.0
    assert type(Budget(max_usd=1).max_usd) is float
    assert Budget().is_unlimited


def test_step_definition_for_name_and_callable() -> None:
    @steptrace.step(name="lookup", model="m", budget=Budget(max_tokens=5))
    def lookup_fn() -> None:
        pass

    by_callable = step_definition_for(lookup_fn)
    by_name = step_definition_for(lookup_fn.__qualname__)
    assert by_callable is not None
    assert by_callable == by_name
    assert (by_callable.name, by_callable.function) == ("lookup", lookup_fn.__qualname__)
    assert (by_callable.model, by_callable.max_tokens) == ("m", 5)
    assert is_tracked_function(lookup_fn.__qualname__)
    assert step_definition_for(_body) is None
    assert step_definition_for("no-such-function") is None


# -- wrapping keeps the function ----------------------------------------------------


def sync_fn(a: int, b: str = "x", *args: int, c: float, **kw: bool) -> str:
    """Sync doc."""
    return f"{a}{b}{args}{c}{kw}"


async def async_fn(a: int, b: str = "x", *args: int, c: float, **kw: bool) -> str:
    """Async doc."""
    return f"{a}{b}{args}{c}{kw}"


def gen_fn(a: int, b: str = "x", *args: int, c: float, **kw: bool) -> Iterator[str]:
    """Generator doc."""
    yield f"{a}{b}{args}{c}{kw}"


async def agen_fn(a: int, b: str = "x", *args: int, c: float, **kw: bool) -> AsyncIterator[str]:
    """Async generator doc."""
    yield f"{a}{b}{args}{c}{kw}"


def _drive(kind: str, result: Any) -> list[str]:
    if kind == "sync":
        return [result]
    if kind == "gen":
        return list(result)

    async def consume() -> list[str]:
        if kind == "async":
            return [await result]
        return [item async for item in result]

    return asyncio.run(consume())


KINDS: list[tuple[str, Callable[..., Any], Callable[[Any], bool]]] = [
    ("sync", sync_fn, inspect.isfunction),
    ("async", async_fn, inspect.iscoroutinefunction),
    ("gen", gen_fn, inspect.isgeneratorfunction),
    ("agen", agen_fn, inspect.isasyncgenfunction),
]


@pytest.mark.parametrize("decorator", ["step", "persona"])
@pytest.mark.parametrize(("kind", "fn", "is_kind"), KINDS, ids=[k[0] for k in KINDS])
def test_wraps_keeps_name_doc_signature_and_kind(
    decorator: str, kind: str, fn: Callable[..., Any], is_kind: Callable[[Any], bool]
) -> None:
    wrapped = steptrace.step(fn) if decorator == "step" else steptrace.persona(fn)
    assert wrapped is not fn
    assert wrapped.__name__ == fn.__name__
    assert wrapped.__qualname__ == fn.__qualname__
    assert wrapped.__doc__ == fn.__doc__
    assert wrapped.__module__ == fn.__module__
    assert inspect.signature(wrapped) == inspect.signature(fn)
    assert is_kind(wrapped)
    assert _drive(kind, wrapped(1, "y", 2, 3, c=0.5, flag=True)) == _drive(
        kind, fn(1, "y", 2, 3, c=0.5, flag=True)
    )
    if decorator == "step":
        assert [s.name for s in steptrace.current_run().completed_steps] == [fn.__name__]


class Assistant:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    @steptrace.step(model="m-method")
    def greet(self, who: str) -> str:
        assert steptrace.active_step_model_default() == "m-method"
        steptrace.record_llm_usage("m-method", 2, 3)
        return f"{self.greeting}, {who}"

    @steptrace.step
    async def agreet(self, who: str) -> str:
        return f"{self.greeting}? {who}"


def test_instance_methods_as_steps() -> None:
    first, second = Assistant("hi"), Assistant("yo")
    assert first.greet("ann") == "hi, ann"
    assert second.greet("bob") == "yo, bob"
    assert asyncio.run(first.agreet("cy")) == "hi? cy"
    rows = steptrace.current_run().completed_steps
    assert [(r.name, r.function, r.input_tokens) for r in rows] == [
        ("greet", "Assistant.greet", 2),
        ("greet", "Assistant.greet", 2),
        ("agreet", "Assistant.agreet", 0),
    ]
    assert is_tracked_function("Assistant.greet")
    assert step_definition_for(Assistant.greet) == step_definition_for("Assistant.greet")
    assert step_definition_for(first.greet) == step_definition_for("Assistant.greet")
    assert inspect.signature(Assistant.greet) == inspect.signature(
        Assistant.greet.__wrapped__  # type: ignore[attr-defined]
    )


def test_a_harn_manifest_loads_and_its_other_fields_are_ignored() -> None:
    # Upstream Harn's step metadata carries these; the seed ignores keys it does not use.
    harn = {
        "name": "harn_step",
        "function": "harn_fn",
        "model": "gpt-4o-mini",
        "budget": {"max_tokens": 500},
        "error_boundary": "continue",
        "approval": {"required": True},
        "receipt": "summary",
        "retry": {"max_attempts": 3},
        "line": 42,
    }
    definition = register_step_from_dict("harn_fn", harn)
    assert definition == StepDefinition(
        name="harn_step",
        function="harn_fn",
        model="gpt-4o-mini",
        max_tokens=500,
        error_boundary="continue",
    )
    # A key neither steptrace nor Harn knows still fails with its name.
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['retries'\]"):
        register_step_from_dict("harn_fn", {**harn, "retries": 3})
