"""The compiled step call (and user span frame) keep the record their pure-Python
reference keeps.

Hypothesis writes programs of nested sync step calls: steps that return,
raise, overspend their budget (so the fail, continue and escalate boundaries
act), emit events, catch what their children raise, run children under a
persona or in another thread; with PreStep/PostStep hooks (some rewriting
arguments or output) registered or not, and a span processor or not. Each
program runs once on steps using ``steptrace._speedups.step`` and once on the
same steps made on the pure-Python path; the ledger, the spans (structure,
names, kinds, statuses, errors, metadata), the events, the exceptions raised
(with their cause and context), the hook and processor calls and what each
body received must be equal.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import steptrace
from steptrace import spans as _spans
from steptrace.hooks import RewriteArgs, RewriteOutput

from ._step_modes import decorate_step, pure_python

# (name, error boundary, budget): every boundary, with and without a budget.
STEP_KINDS: list[tuple[str, str, dict[str, int] | None]] = [
    ("plain", "fail", None),
    ("fail_budget", "fail", {"max_tokens": 100}),
    ("continue_budget", "continue", {"max_tokens": 100}),
    ("escalate_budget", "escalate", {"max_tokens": 100}),
    ("continue_plain", "continue", None),
    ("escalate_plain", "escalate", None),
]

ACTIONS = ["return", "raise", "overspend", "spend", "event", "base_exception"]


@dataclass(frozen=True)
class Node:
    kind: int
    action: str
    children: tuple[Node, ...]
    catch: bool
    """Catch (and log) what each child raises, instead of letting it through."""
    persona: bool
    """Call this node's step inside a persona."""
    thread: bool
    """Call this node's step in another thread (context carried by ``bind``)."""
    kwargs: bool
    """Pass the argument by keyword."""
    span: bool = False
    """Call the children inside a user span (``steptrace.span``)."""


def nodes() -> st.SearchStrategy[Node]:
    leaf = st.builds(
        Node,
        kind=st.integers(0, len(STEP_KINDS) - 1),
        action=st.sampled_from(ACTIONS),
        children=st.just(()),
        catch=st.booleans(),
        persona=st.booleans(),
        thread=st.booleans(),
        kwargs=st.booleans(),
    )
    return st.recursive(
        leaf,
        lambda inner: st.builds(
            Node,
            kind=st.integers(0, len(STEP_KINDS) - 1),
            action=st.sampled_from(ACTIONS),
            children=st.lists(inner, max_size=3).map(tuple),
            catch=st.booleans(),
            persona=st.booleans(),
            thread=st.booleans(),
            kwargs=st.booleans(),
            span=st.booleans(),
        ),
        max_leaves=8,
    )


class Stop(BaseException):
    """Not an Exception: a step's handler must still see and record it."""


def describe(exc: BaseException | None, depth: int = 0) -> Any:
    """An exception as data: type, message, cause, context (two levels deep)."""
    if exc is None or depth > 2:
        return None
    return (
        type(exc).__name__,
        str(exc),
        getattr(exc, "escalated", None),
        describe(exc.__cause__, depth + 1),
        exc.__suppress_context__,
        describe(exc.__context__, depth + 1),
    )


class Program:
    """One program's steps, made in one mode, and the log its bodies write."""

    def __init__(self, accelerated: bool) -> None:
        self.log: list[Any] = []
        self.steps = [
            decorate_step(
                accelerated,
                self._body(name),
                name=f"eq.{name}",
                budget=budget,
                error_boundary=boundary,
            )
            for name, boundary, budget in STEP_KINDS
        ]

        @steptrace.persona(name="eq.persona")
        def in_persona(node: Node) -> Any:
            return self.call(node)

        self.in_persona = in_persona

    def _body(self, name: str) -> Any:
        def body(node: Node, tag: str = "", **extra: Any) -> Any:
            self.log.append(("body", name, node.action, tag, sorted(extra)))
            if node.span:
                with steptrace.span(
                    f"span.{name}", kind=steptrace.SpanKind.TOOL, depth=len(node.children)
                ):
                    return self._run_body(name, node)
            return self._run_body(name, node)

        body.__name__ = body.__qualname__ = f"body_{name}"
        return body

    def _run_body(self, name: str, node: Node) -> Any:
        for child in node.children:
            if node.catch:
                try:
                    self.log.append(("child returned", self.enter(child)))
                except BaseException as exc:  # logged, compared
                    self.log.append(("child raised", describe(exc)))
            else:
                self.log.append(("child returned", self.enter(child)))
        if node.action == "raise":
            raise ValueError(f"{name} failed")
        if node.action == "base_exception":
            raise Stop(name)
        if node.action == "overspend":
            steptrace.record_llm_usage("m", 80, 80, cost_usd=0.0)
        if node.action == "spend":
            steptrace.record_llm_usage("m", 3, 4, cost_usd=0.001)
        if node.action == "event":
            steptrace.emit_event(
                steptrace.LlmCall(
                    call_id=name,
                    model="m",
                    input_tokens=1,
                    output_tokens=2,
                    cache_tokens=0,
                    duration_ms=3,
                    iteration=len(node.children),
                )
            )
        return (name, len(node.children))

    def call(self, node: Node) -> Any:
        step = self.steps[node.kind]
        return step(node=node) if node.kwargs else step(node, "positional")

    def enter(self, node: Node) -> Any:
        """Call the node's step, under a persona and/or in a thread as it says."""

        def go() -> Any:
            return self.in_persona(node) if node.persona else self.call(node)

        if not node.thread:
            return go()
        outcome: list[Any] = []

        def in_thread() -> None:
            try:
                outcome.append(("returned", go()))
            except BaseException as exc:  # carried back to this thread
                outcome.append(("raised", exc))

        worker = threading.Thread(target=steptrace.bind(in_thread))
        worker.start()
        worker.join()
        how, value = outcome[0]
        if how == "raised":
            raise value
        return value


@dataclass(frozen=True)
class Observers:
    hooks: bool
    rewrite_args: bool
    rewrite_output: bool
    processor: bool


class Recorder:
    """Hooks and a span processor that log what they are shown."""

    def __init__(self, observers: Observers) -> None:
        self.observers = observers
        self.log: list[Any] = []

    def pre_step(self, context: Any) -> Any:
        self.log.append(("PreStep", context.step, context.persona, context.budget_pct))
        payload = context.payload or {}
        if self.observers.rewrite_args and context.step == "eq.plain":
            args = payload.get("args", ())
            return RewriteArgs(args, {**payload.get("kwargs", {}), "rewritten": True})
        return None

    def post_step(self, context: Any) -> Any:
        error = context.error
        self.log.append(("PostStep", context.step, context.status, describe(error)))
        rewrite = self.observers.rewrite_output and context.status == "completed"
        if rewrite and context.step == "eq.continue_plain":
            return RewriteOutput(("rewritten", context.step))
        return None

    def handoff(self, context: Any) -> None:
        self.log.append(("OnHandoffEmitted", context.step, context.status))

    def on_start(self, span: Any) -> None:
        self.log.append(("start", span.name, span.kind.value))

    def on_end(self, span: Any) -> None:
        self.log.append(("end", span.name, span.status, span.error))


def record_of(run: steptrace.Run) -> dict[str, Any]:
    """A run's record with ids and times replaced by positions."""
    index = {span.span_id: i for i, span in enumerate(run.spans)}
    spans = [
        (
            span.name,
            span.kind.value,
            span.status,
            span.error,
            index.get(span.parent_id, "elsewhere") if span.parent_id is not None else None,
            {k: v for k, v in span.metadata.items() if k not in ("run.name",)},
        )
        for span in run.spans
    ]
    ledger = []
    for row in run.completed_steps:
        data = row.to_dict()
        assert data.pop("ended_ns") >= data.pop("started_ns")
        data["span_id"] = index[data["span_id"]]
        data["parent_span_id"] = index.get(data["parent_span_id"], "elsewhere")
        ledger.append(data)
    events = [(index[span_id], event.to_dict()) for span_id, event in run.events_by_span()]
    return {
        "spans": spans,
        "ledger": ledger,
        "events": events,
        "usage": run.usage(),
        "summary_steps": run.summary()["steps"],
    }


def execute(accelerated: bool, program: list[Node], observers: Observers) -> dict[str, Any]:
    steptrace.reset()
    steps = Program(accelerated)
    with pure_python(not accelerated):
        return _execute(steps, program, observers)


def _execute(steps: Program, program: list[Node], observers: Observers) -> dict[str, Any]:
    recorder = Recorder(observers)
    if observers.hooks:
        steptrace.register_persona_hook("*", "PreStep", recorder.pre_step)
        steptrace.register_persona_hook("*", "PostStep", recorder.post_step)
        steptrace.register_persona_hook("*", "OnHandoffEmitted", recorder.handoff)
    if observers.processor:
        steptrace.add_span_processor(recorder)
    outcomes: list[Any] = []
    try:
        with steptrace.run("eq") as run:
            for node in program:
                try:
                    outcomes.append(("returned", steps.enter(node)))
                except BaseException as exc:  # compared between the modes
                    outcomes.append(("raised", describe(exc)))
    finally:
        steptrace.clear_hooks()
        if observers.processor:
            steptrace.remove_span_processor(recorder)
    return {
        "outcomes": outcomes,
        "bodies": steps.log,
        "observed": recorder.log,
        **record_of(run),
    }


@settings(max_examples=60)
@given(
    program=st.lists(nodes(), min_size=1, max_size=3),
    observers=st.builds(Observers, st.booleans(), st.booleans(), st.booleans(), st.booleans()),
)
def test_compiled_step_call_keeps_the_reference_record(
    program: list[Node], observers: Observers
) -> None:
    compiled = execute(True, program, observers)
    reference = execute(False, program, observers)
    assert compiled == reference


def test_processors_registered_after_decoration_are_seen() -> None:
    # spans.processors is rebound on registration: the compiled call reads it
    # at call time, as the Python body does.
    program = [Node(0, "return", (), False, False, False, False)]
    seen = execute(True, program, Observers(False, False, False, True))["observed"]
    assert seen == execute(False, program, Observers(False, False, False, True))["observed"]
    assert ("start", "eq.plain", "step") in seen
    assert _spans.processors == ()
