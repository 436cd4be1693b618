"""The compiled step call: used by ``@step`` when built, a function to its
users, and equal to the pure-Python reference in the cases named here
(exception chaining, hooks rewriting arguments and output, retention, a step
called outside any run), without leaking a reference."""

from __future__ import annotations

import copy
import gc
import importlib
import inspect
import pickle
import sys
import tracemalloc
import types
from collections.abc import Callable
from typing import Any

import pytest

import steptrace
from steptrace import _context, _speedups, _wrappers
from steptrace.hooks import RewriteArgs, RewriteOutput

from ..test_speedups import require_built
from ._step_modes import MODE_IDS, MODES, decorate_step


def _add(a: int, b: int = 1) -> int:
    """Add."""
    return a + b


def test_step_uses_the_compiled_call_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    require_built("step")
    if _speedups.PURE_PYTHON:
        pytest.skip("STEPTRACE_PURE_PYTHON=1 turns the compiled call off")
    compiled: Any = importlib.import_module("steptrace._speedups.step")

    @steptrace.step(name="acc.used")
    def used(x: int) -> int:
        return x

    assert compiled.is_accelerated(used)
    assert type(used) is compiled.StepFunction
    # The Python body builds its frame through this name; the compiled call
    # never looks it up.
    calls: list[Any] = []
    reference = _wrappers._step_frame

    def counting(*args: Any) -> Any:
        calls.append(args)
        return reference(*args)

    monkeypatch.setattr(_wrappers, "_step_frame", counting)
    with steptrace.run("acc"):
        assert used(3) == 3
    assert calls == []


@pytest.mark.parametrize("accelerated", MODES, ids=MODE_IDS)
def test_the_wrapper_is_still_a_function(accelerated: bool) -> None:
    add = decorate_step(accelerated, _add, name="acc.add")
    assert isinstance(add, types.FunctionType)
    assert inspect.isfunction(add)
    assert (add.__name__, add.__qualname__, add.__doc__, add.__module__) == (
        "_add",
        "_add",
        "Add.",
        __name__,
    )
    assert add.__wrapped__ is _add  # type: ignore[attr-defined]
    assert inspect.signature(add) == inspect.signature(_add)
    assert repr(add).startswith("<function _add at ")
    assert copy.copy(add) is add
    assert copy.deepcopy(add) is add

    class Holder:
        method = decorate_step(accelerated, lambda self, x: (self, x), name="acc.method")

    holder = Holder()
    assert holder.method(2) == (holder, 2)
    assert Holder.method(holder, 3) == (holder, 3)
    with steptrace.run("acc") as run:
        assert [add(1), add(1, b=5), add(*[2], **{"b": 2})] == [2, 6, 4]
    assert [row.name for row in run.completed_steps] == ["acc.add"] * 3


# A step at module level pickles by reference, like any function.
def _pickled(x: int) -> int:
    return x


pickled_step = steptrace.step(name="acc.pickled")(_pickled)
pickled_step.__qualname__ = "pickled_step"


def test_a_module_level_step_pickles_by_name() -> None:
    assert pickle.loads(pickle.dumps(pickled_step)) is pickled_step


def _raise_in(accelerated: bool, boundary: str, error: Callable[[], BaseException]) -> Any:
    @steptrace.persona(name="acc.persona")
    def around(step: Callable[[], Any]) -> Any:
        return step()

    def body() -> None:
        steptrace.record_llm_usage("m", 5, 5, cost_usd=0.0)
        raise error()

    step = decorate_step(
        accelerated, body, name="acc.raise", budget={"max_tokens": 100}, error_boundary=boundary
    )
    handled: list[Any] = []

    def post_step(context: Any) -> None:
        # Inside the step's handler, as in the Python `except` block.
        handled.append((context.status, type(sys.exception()).__name__))

    steptrace.register_persona_hook("*", "PostStep", post_step)
    with steptrace.run("acc") as run:
        try:
            outcome: Any = ("returned", around(step))
        except BaseException as exc:  # compared
            outcome = ("raised", exc)
        assert sys.exception() is None  # the emulated except block is left
    steptrace.clear_hooks()
    return outcome, handled, [row.status for row in run.completed_steps]


def _exhausted() -> steptrace.BudgetExhausted:
    return steptrace.BudgetExhausted(
        step="acc.pool",
        function="pool",
        limit="max_tokens",
        limit_value=1,
        consumed_tokens=2,
        consumed_cost_usd=0.0,
    )


@pytest.mark.parametrize("boundary", ["fail", "continue", "escalate"])
@pytest.mark.parametrize(
    "error",
    [
        lambda: ValueError("plain"),
        _exhausted,
        lambda: KeyboardInterrupt(),
    ],
    ids=["value_error", "budget", "keyboard_interrupt"],
)
def test_failures_chain_as_the_reference_chains_them(
    boundary: str, error: Callable[[], BaseException]
) -> None:
    compiled, handled, statuses = _raise_in(True, boundary, error)
    reference, handled_ref, statuses_ref = _raise_in(False, boundary, error)
    assert (handled, statuses) == (handled_ref, statuses_ref)
    assert compiled[0] == reference[0]
    if compiled[0] == "returned":
        assert (compiled[1], reference[1]) == (None, None)
        return
    mine, theirs = compiled[1], reference[1]
    for exc in (mine, theirs):
        # Re-raised as is, or raised `from` the original, with it as context.
        if exc.__cause__ is not None:
            assert exc.__context__ is exc.__cause__
            assert exc.__suppress_context__
    assert (type(mine), str(mine)) == (type(theirs), str(theirs))
    assert type(mine.__cause__) is type(theirs.__cause__)
    assert type(mine.__context__) is type(theirs.__context__)
    assert getattr(mine, "escalated", None) == getattr(theirs, "escalated", None)


@pytest.mark.parametrize("accelerated", MODES, ids=MODE_IDS)
def test_a_failing_post_step_hook_chains_to_the_step_error(accelerated: bool) -> None:
    def body() -> None:
        raise ValueError("body")

    def broken(context: Any) -> None:
        raise RuntimeError("hook")

    step = decorate_step(accelerated, body, name="acc.hook_fails")
    steptrace.register_persona_hook("*", "PostStep", broken)
    with steptrace.run("acc"), pytest.raises(RuntimeError) as caught:  # strict mode
        step()
    steptrace.clear_hooks()
    assert type(caught.value.__context__) is ValueError


@pytest.mark.parametrize("accelerated", MODES, ids=MODE_IDS)
def test_hooks_rewrite_arguments_and_result(accelerated: bool) -> None:
    received: list[Any] = []

    def body(*args: Any, **kwargs: Any) -> Any:
        received.append((args, kwargs))
        return "original"

    step = decorate_step(accelerated, body, name="acc.rewritten")

    def pre(context: Any) -> Any:
        return RewriteArgs((*context.payload["args"], "added"), {"k": "v"})

    def post(context: Any) -> Any:
        return RewriteOutput(("rewritten", context.payload["output"]))

    steptrace.register_step_hook("*", "acc.rewritten", "PreStep", pre)
    steptrace.register_step_hook("*", "acc.rewritten", "PostStep", post)
    with steptrace.run("acc") as run:
        assert step(1, x=2) == ("rewritten", "original")
    steptrace.clear_hooks()
    assert received == [((1, "added"), {"k": "v"})]
    assert set(run.spans[-1].metadata) >= {"hook_rewrote_args", "hook_rewrote_output"}


@pytest.mark.parametrize("accelerated", MODES, ids=MODE_IDS)
def test_retention_trims_as_the_reference(accelerated: bool) -> None:
    step = decorate_step(accelerated, lambda i: i, name="acc.retained")
    with steptrace.run("acc", retain=3) as run:
        assert [step(i) for i in range(20)] == list(range(20))
    assert len(run.spans) <= 6
    assert len(run.ended_steps) <= 6
    assert run.dropped["spans"] + len(run.spans) == 21  # the root too
    assert run.dropped["steps"] + len(run.ended_steps) == 20
    assert run.summary()["steps"]["completed"] == 20


@pytest.mark.parametrize("accelerated", MODES, ids=MODE_IDS)
def test_a_step_called_outside_any_run_records_in_the_default_run(accelerated: bool) -> None:
    step = decorate_step(accelerated, lambda: "done", name="acc.outside")
    steptrace.reset()
    _context.set_frame(None)  # no run in this context at all
    assert step() == "done"
    run = steptrace.current_run()
    assert run.is_default
    assert [(row.name, row.status) for row in run.completed_steps] == [("acc.outside", "completed")]
    assert run.spans[-1].parent_id == run.root.span_id


def _churn(step: Callable[..., Any], n: int) -> None:
    arg, kwarg = object(), object()
    for i in range(n):
        step(arg, key=kwarg, fail=i % 3 == 0)


def test_the_compiled_call_leaks_nothing() -> None:
    require_built("step")
    result = object()

    def body(arg: object, key: object, fail: bool) -> object:
        if fail:
            raise _exhausted()
        return result

    step = decorate_step(True, body, name="acc.leak", error_boundary="continue")
    refs = [sys.getrefcount(o) for o in (result, step, body, None)]
    with steptrace.run("acc", retain=10):
        _churn(step, 300)  # warm up: caches, the run's first trims
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        _churn(step, 3000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    assert grown < 20_000, f"{grown} bytes kept by 3000 calls"
    gc.collect()
    assert [sys.getrefcount(o) for o in (result, step, body)] == refs[:3]
    frames = [o for o in gc.get_objects() if type(o) is _context.StepFrame]
    assert not [frame for frame in frames if frame.definition.name == "acc.leak"]


@pytest.mark.parametrize("accelerated", MODES, ids=MODE_IDS)
def test_the_collector_sees_every_slot_of_a_step_frame(accelerated: bool) -> None:
    # With the accelerator the collector walks a StepFrame by a compiled list
    # of its slots: what it reaches must be what CPython's own walk reaches.
    step = decorate_step(accelerated, lambda: None, name="acc.walked")
    with steptrace.run("acc") as run:
        step()
    frame = run.spans[-1]
    frame.metadata["k"] = "v"  # a slot holding a container
    expected: list[object] = []
    for cls in type(frame).__mro__:
        for name in sorted(cls.__dict__.get("__slots__", ())):
            try:
                expected.append(cls.__dict__[name].__get__(frame, cls))
            except AttributeError:  # an empty slot is not visited
                pass
    expected.append(type(frame))
    referents = gc.get_referents(frame)
    assert [id(o) for o in referents] == [id(o) for o in expected]


def _slots(frame: object) -> dict[str, object]:
    values: dict[str, object] = {}
    for cls in type(frame).__mro__:
        for name in cls.__dict__.get("__slots__", ()):
            try:
                values[name] = cls.__dict__[name].__get__(frame, cls)
            except AttributeError:
                values[name] = "<empty>"
    return values


@pytest.mark.parametrize("metadata", [None, {}, {"source": "web"}], ids=["none", "empty", "set"])
def test_a_user_span_frame_is_filled_as_the_reference_fills_it(
    metadata: dict[str, Any] | None,
) -> None:
    @steptrace.persona(name="acc.persona")
    def persona(body: Callable[[], Any]) -> Any:
        return body()

    parents: list[Any] = []
    step = decorate_step(True, lambda: parents.append(_context.get_frame()), name="acc.parent")
    with steptrace.run("acc") as run:
        parents.append(run.root)
        persona(lambda: parents.append(_context.get_frame()))
        step()
        with steptrace.span("acc.user") as user:
            parents.append(user)
    kind = steptrace.SpanKind.TOOL
    for parent in parents:
        compiled = _context.span_frame("acc.child", kind, parent, metadata)
        reference = _context.reference_span_frame("acc.child", kind, parent, metadata)
        assert type(compiled) is type(reference) is _context.Frame
        mine, theirs = _slots(compiled), _slots(reference)
        assert mine.pop("span_id") != theirs.pop("span_id")
        assert 0 <= theirs.pop("start_ns") - mine.pop("start_ns") < 10**9  # type: ignore[operator]
        assert mine == theirs
    not_a_frame: Any = object()
    with pytest.raises(AttributeError) as compiled_error:
        _context.span_frame("acc.child", kind, not_a_frame, None)
    with pytest.raises(AttributeError) as reference_error:
        _context.reference_span_frame("acc.child", kind, not_a_frame, None)
    assert str(compiled_error.value) == str(reference_error.value)
