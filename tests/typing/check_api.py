"""Usage examples that exist only to be type-checked (``mypy --strict``).

Never run: ``tests/test_typing.py`` runs mypy on this file and requires it to
pass. Each assignment to an annotated variable pins a type the decorators
must keep (ParamSpec carries the parameters, the return type comes through);
a decorator that erased the signature to ``Callable[..., Any]`` would still
pass here, which is why test_typing.py also checks that a wrong call fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, assert_never

import steptrace
from steptrace import (
    ActiveStep,
    AgentEvent,
    Budget,
    BudgetExhausted,
    CompletedStep,
    ContextCompaction,
    LlmCall,
    LlmTraceEntry,
    LoopComplete,
    LoopIntervention,
    PhaseChange,
    Run,
    SchemaRetry,
    Span,
    SpanKind,
    StepDefinition,
    ToolExecution,
    ToolRejected,
)


@steptrace.step
def plain(a: int, b: str = "x", *, flag: bool = False) -> str:
    return f"{a}{b}{flag}"


@steptrace.step(name="answer", model="m", budget={"max_tokens": 10}, error_boundary="continue")
async def coro(question: str) -> int:
    return len(question)


@steptrace.step()
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@steptrace.step(budget=Budget(max_usd=0.5))
async def words(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield str(i)


@steptrace.persona
def researcher(topic: str) -> list[str]:
    return [plain(len(topic))]


@steptrace.persona(name="writer", budget={"max_usd": 1.0})
async def writer(draft: str, *, words_max: int) -> str:
    return draft[:words_max]


class Assistant:
    @steptrace.step(model="m")
    def greet(self, who: str) -> str:
        return f"hi {who}"


def sync_usage() -> None:
    text: str = plain(1)
    text = plain(2, "y", flag=True)
    total: int = sum(numbers(3))
    found: list[str] = researcher("topic")
    greeting: str = Assistant().greet("ann")
    as_callable: Callable[[int, str], str] = plain
    bound: Callable[[str], list[str]] = steptrace.bind(researcher)
    del text, total, found, greeting, as_callable, bound


async def async_usage() -> None:
    length: int = await coro("why?")
    collected: list[str] = [w async for w in words(2)]
    short: str = await writer("draft", words_max=3)
    del length, collected, short


def run_and_spans() -> None:
    with steptrace.run("typed", budget={"max_tokens": 100}, metadata={"k": "v"}) as run:
        same: Run = run
        with steptrace.span("block", kind=SpanKind.TOOL, source="web") as span:
            opened: Span = span
            span.set("hits", 3)
        steptrace.record_llm_usage("m", 1, 2, cost_usd=0.1, duration_ms=5, cache_tokens=0)
        active: ActiveStep | None = steptrace.current_step()
        persona_name: str | None = steptrace.current_persona_name()
        model: str | None = steptrace.active_step_model_default()
        del same, opened, active, persona_name, model
    rows: list[CompletedStep] = run.completed_steps
    summary: dict[str, Any] = run.summary()
    del rows, summary


async def async_run() -> None:
    async with steptrace.run() as run, steptrace.span("a") as span:
        await steptrace.arecord_llm_usage("m", 1, 1)
        same: Run = run
        opened: Span = span
        del same, opened


def trace_log() -> None:
    steptrace.enable_tracing()
    entries: list[LlmTraceEntry] = steptrace.take_trace()
    peeked: list[LlmTraceEntry] = steptrace.peek_trace()
    counts: tuple[int, int, int, int] = steptrace.peek_trace_summary()
    del entries, peeked, counts


def describe(event: AgentEvent) -> str:
    """Consumers can match the eight events exhaustively."""
    match event:
        case LlmCall():
            return event.model
        case ToolExecution():
            return event.tool_name
        case ToolRejected():
            return event.reason
        case LoopIntervention():
            return event.kind
        case ContextCompaction():
            return str(event.archived_messages)
        case PhaseChange():
            return event.to_phase
        case LoopComplete():
            return ",".join(event.tools_used)
        case SchemaRetry():
            return ",".join(event.errors)
        case _:
            assert_never(event)


def events() -> None:
    event: AgentEvent = LlmCall(
        call_id="c",
        model="m",
        input_tokens=1,
        output_tokens=2,
        cache_tokens=0,
        duration_ms=3,
        iteration=0,
    )
    steptrace.emit_event(event)
    data: dict[str, Any] = event.to_dict()
    back: AgentEvent = steptrace.event_from_dict(data)
    events_now: list[AgentEvent] = steptrace.take_agent_trace()
    summary: dict[str, Any] = steptrace.agent_trace_summary()
    del back, events_now, summary


def errors(err: BaseException) -> None:
    escalated: BaseException = steptrace.mark_escalated(err, step="s", function="f")
    if isinstance(escalated, BudgetExhausted):
        seed: dict[str, Any] = escalated.to_dict()
        del seed
    flag: bool = steptrace.is_budget_exhausted(err)
    definition: StepDefinition | None = steptrace.step_definition_for(plain)
    registered: StepDefinition = steptrace.register_step_from_dict("fn", {"model": "m"})
    del flag, definition, registered
