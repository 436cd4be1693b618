"""The current run's LLM trace log and agent event log."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import steptrace
from steptrace import (
    LlmCall,
    LlmTraceEntry,
    LoopComplete,
    PhaseChange,
    ToolExecution,
    agent_trace_summary,
    emit_event,
    enable_tracing,
    peek_agent_trace,
    peek_trace,
    peek_trace_summary,
    record_llm_usage,
    take_agent_trace,
    take_trace,
)


def _ids(events: list[steptrace.AgentEvent]) -> list[str]:
    return [e.call_id if isinstance(e, LlmCall) else type(e).__name__ for e in events]


def _llm(call_id: str, input_tokens: int = 1, output_tokens: int = 2) -> LlmCall:
    return LlmCall(
        call_id=call_id,
        model="m",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_tokens=0,
        duration_ms=10,
        iteration=0,
    )


# -- LLM trace log ----------------------------------------------------------------


def test_default_run_records_only_after_enable_tracing() -> None:
    record_llm_usage("before", 5, 5)
    assert peek_trace() == []
    assert peek_trace_summary() == (0, 0, 0, 0)
    enable_tracing()
    record_llm_usage("after", 3, 4, duration_ms=12, cost_usd=0.25, cache_tokens=2)
    assert peek_trace() == [LlmTraceEntry("after", 3, 4, 12, 0.25, 2)]


def test_enable_tracing_false_stops_recording() -> None:
    enable_tracing()
    record_llm_usage("a", 1, 1)
    enable_tracing(False)
    record_llm_usage("b", 1, 1)
    assert [e.model for e in peek_trace()] == ["a"]


def test_explicit_run_records_from_the_start() -> None:
    with steptrace.run("traced") as run:
        record_llm_usage("m1", 10, 20, duration_ms=100)
        assert peek_trace() == [LlmTraceEntry("m1", 10, 20, 100, None, 0)]
    assert run.llm_trace == [LlmTraceEntry("m1", 10, 20, 100, None, 0)]
    # The default run outside never saw it (and is still not tracing).
    assert peek_trace() == []


def test_trace_entry_keeps_the_seed_fields_first() -> None:
    entry = LlmTraceEntry("m", 1, 2, 3)
    assert entry.to_dict() == {
        "model": "m",
        "input_tokens": 1,
        "output_tokens": 2,
        "duration_ms": 3,
        "cost_usd": None,
        "cache_tokens": 0,
    }
    assert list(entry.to_dict())[:4] == ["model", "input_tokens", "output_tokens", "duration_ms"]


def test_take_clears_and_peek_does_not() -> None:
    enable_tracing()
    record_llm_usage("a", 1, 2, duration_ms=3)
    record_llm_usage("b", 4, 5, duration_ms=6)
    first = peek_trace()
    second = peek_trace()
    assert first == second
    assert [e.model for e in first] == ["a", "b"]
    first.clear()  # a copy: the log is untouched
    assert len(peek_trace()) == 2
    taken = take_trace()
    assert [e.model for e in taken] == ["a", "b"]
    assert take_trace() == []
    assert peek_trace() == []
    record_llm_usage("c", 1, 1)  # tracing stays on after take
    assert [e.model for e in take_trace()] == ["c"]


def test_peek_trace_summary_is_input_output_duration_count() -> None:
    enable_tracing()
    record_llm_usage("a", 10, 1, duration_ms=100)
    record_llm_usage("b", 20, 2, duration_ms=250)
    record_llm_usage("c", 30, 3, duration_ms=7)
    assert peek_trace_summary() == (60, 6, 357, 3)
    assert peek_trace_summary() == (60, 6, 357, 3)  # does not consume
    assert len(peek_trace()) == 3
    take_trace()
    assert peek_trace_summary() == (0, 0, 0, 0)


def test_trace_records_calls_inside_steps() -> None:
    @steptrace.step(model="m-default")
    def answer() -> None:
        record_llm_usage("m-used", 5, 6, duration_ms=1)

    with steptrace.run():
        answer()
        assert peek_trace_summary() == (5, 6, 1, 1)
        assert peek_trace()[0].model == "m-used"


# -- agent events -----------------------------------------------------------------


def test_emit_take_peek_on_the_current_run() -> None:
    events: list[steptrace.AgentEvent] = [
        _llm("1"),
        PhaseChange(from_phase="a", to_phase="b", iteration=1),
        _llm("2"),
    ]
    for event in events:
        emit_event(event)
    assert peek_agent_trace() == events
    peeked = peek_agent_trace()
    peeked.clear()
    assert peek_agent_trace() == events
    assert steptrace.current_run().events == events
    assert take_agent_trace() == events
    assert take_agent_trace() == []
    assert peek_agent_trace() == []


def test_agent_trace_summary_of_the_current_run() -> None:
    assert agent_trace_summary()["status"] == "unknown"
    assert agent_trace_summary()["llm_calls"] == 0
    emit_event(_llm("1", 10, 20))
    emit_event(
        ToolExecution(
            tool_name="grep",
            tool_use_id="t",
            duration_ms=5,
            status="ok",
            classification="read_only",
            iteration=1,
        )
    )
    emit_event(LoopComplete(status="done", iterations=2, total_duration_ms=99))
    summary = agent_trace_summary()
    assert summary["status"] == "done"
    assert summary["iterations"] == 2
    assert summary["total_duration_ms"] == 99
    assert summary["llm_calls"] == 1
    assert summary["tool_executions"] == 1
    assert summary["total_input_tokens"] == 10
    assert summary["total_output_tokens"] == 20
    assert summary["total_tool_duration_ms"] == 5
    assert summary["tools_used"] == ["grep"]
    # The summary reads, it does not consume.
    assert len(peek_agent_trace()) == 3
    assert steptrace.summarize_events(peek_agent_trace()) == summary


@pytest.mark.parametrize(
    "not_an_event",
    [
        {"type": "llm_call"},
        "llm_call",
        None,
        42,
        LlmTraceEntry("m", 1, 1, 1),
        LlmCall,  # the class, not an instance
    ],
)
def test_emit_event_rejects_non_events(not_an_event: Any) -> None:
    with pytest.raises(TypeError, match="emit_event"):
        emit_event(not_an_event)
    assert peek_agent_trace() == []


def test_runs_do_not_share_logs() -> None:
    enable_tracing()
    emit_event(_llm("default"))
    record_llm_usage("default", 1, 1)
    with steptrace.run("a") as run_a:
        assert peek_agent_trace() == []
        assert peek_trace() == []
        emit_event(_llm("a"))
        record_llm_usage("a", 2, 2)
        with steptrace.run("b") as run_b:
            assert peek_agent_trace() == []
            emit_event(_llm("b"))
            record_llm_usage("b", 3, 3)
            assert take_agent_trace() == [_llm("b")]
        assert peek_agent_trace() == [_llm("a")]
        assert [e.model for e in peek_trace()] == ["a"]
    assert _ids(run_a.events) == ["a"]
    assert run_b.events == []
    assert [e.model for e in run_b.llm_trace] == ["b"]
    assert peek_agent_trace() == [_llm("default")]
    assert [e.model for e in peek_trace()] == ["default"]


def test_runs_in_threads_do_not_share_logs() -> None:
    seen: dict[str, list[str]] = {}
    sums: dict[str, tuple[int, int, int, int]] = {}
    barrier = threading.Barrier(4)

    def work(name: str) -> None:
        with steptrace.run(name):
            barrier.wait()
            for i in range(50):
                emit_event(_llm(f"{name}-{i}"))
                record_llm_usage(name, 1, 0)
            barrier.wait()
            seen[name] = sorted({i.split("-")[0] for i in _ids(peek_agent_trace())})
            sums[name] = peek_trace_summary()

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {f"t{i}": [f"t{i}"] for i in range(4)}
    assert sums == {f"t{i}": (50, 0, 0, 50) for i in range(4)}


def test_a_new_thread_gets_its_own_default_run() -> None:
    enable_tracing()
    emit_event(_llm("main"))
    seen: list[list[str]] = []

    def other() -> None:
        seen.append(_ids(peek_agent_trace()))
        emit_event(_llm("thread"))
        record_llm_usage("thread", 1, 1)  # not traced: that default run never enabled it
        seen.append(_ids(peek_agent_trace()))
        seen.append([e.model for e in peek_trace()])

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [[], ["thread"], []]
    assert _ids(peek_agent_trace()) == ["main"]


def test_runs_in_tasks_do_not_share_logs() -> None:
    async def work(name: str) -> list[str]:
        async with steptrace.run(name):
            for i in range(20):
                emit_event(_llm(f"{name}-{i}"))
                await asyncio.sleep(0)
            return _ids(take_agent_trace())

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(work(f"r{i}") for i in range(5)))

    results = asyncio.run(main())
    assert results == [[f"r{n}-{i}" for i in range(20)] for n in range(5)]


def test_reset_clears_both_logs_and_switches_tracing_off() -> None:
    enable_tracing()
    record_llm_usage("m", 1, 1)
    emit_event(_llm("x"))
    before = steptrace.current_run()
    steptrace.reset()
    assert steptrace.current_run() is not before
    assert peek_trace() == []
    assert peek_agent_trace() == []
    record_llm_usage("m", 1, 1)
    assert peek_trace() == []  # a fresh default run: tracing off again


def test_each_event_remembers_the_span_it_was_emitted_under() -> None:
    from steptrace import LlmCall

    def event(n: int) -> LlmCall:
        return LlmCall(
            call_id=str(n),
            model="m",
            input_tokens=1,
            output_tokens=1,
            cache_tokens=0,
            duration_ms=0,
            iteration=n,
        )

    @steptrace.step
    def inner() -> None:
        steptrace.emit_event(event(2))

    with steptrace.run() as run:
        steptrace.emit_event(event(1))
        with steptrace.span("work") as work:
            inner()
        step_span = next(s for s in run.spans if s.name == "inner")
        assert run.events_by_span() == [(run.root.span_id, event(1)), (step_span.span_id, event(2))]
        assert step_span.parent_id == work.span_id
        steptrace.take_agent_trace()
        assert run.events_by_span() == []


def test_an_open_span_is_in_the_record_but_never_current() -> None:
    """``open_span`` is for work whose start and end are seen from different
    places (framework callbacks): it is a child of the current span, nothing
    opened afterwards nests under it, events can be filed under it from
    anywhere, and ``end_span`` closes it once."""
    from steptrace.spans import end_span
    from steptrace.tracing import open_span

    @steptrace.step
    def after() -> None:
        steptrace.emit_event(_llm("in-step"))

    with steptrace.run() as run:
        with steptrace.span("outer") as outer:
            request = open_span("chat m", steptrace.SpanKind.LLM_CALL, model="m")
            assert steptrace.current_span() is outer
            after()
        done = threading.Event()

        def elsewhere() -> None:
            with steptrace.run("another"):
                emit_event(_llm("late"), span=request)  # filed in the span's own run
            done.set()

        threading.Thread(target=elsewhere).start()
        assert done.wait(5)
        assert request.end_ns is None
        end_span(request, "boom")
        end_span(request)  # once
        step_span = next(s for s in run.spans if s.name == "after")
        assert request.parent_id == outer.span_id == step_span.parent_id
        assert (request.status, request.metadata["model"]) == ("error", "m")
        assert run.events_by_span() == [
            (step_span.span_id, _llm("in-step")),
            (request.span_id, _llm("late")),
        ]
    with pytest.raises(ValueError, match="non-empty"):
        open_span("")
    with pytest.raises(TypeError, match="span of a run"):
        emit_event(_llm("x"), span=object())  # type: ignore[arg-type]


def test_a_user_span_fills_every_slot_as_the_frame_constructor_does() -> None:
    """``span()`` and ``open_span`` build their frame slot by slot
    (``_context.span_frame``): it must be the frame ``Frame(...)`` makes, down
    to the budget scopes it reports usage to."""
    from steptrace import _context

    @steptrace.step(budget={"max_tokens": 100})
    def budgeted() -> tuple[_context.Frame, _context.Frame]:
        parent = _context.get_frame()
        assert parent is not None
        with steptrace.span("mine", steptrace.SpanKind.TOOL, source="web") as made:
            assert isinstance(made, _context.Frame)
            return made, _context.Frame(
                "mine", steptrace.SpanKind.TOOL, parent, parent.run, metadata={"source": "web"}
            )

    with steptrace.run("slots"):
        made, reference = budgeted()
    slots = [s for cls in type(reference).__mro__ for s in getattr(cls, "__slots__", ())]
    differing = {"span_id", "start_ns", "end_ns", "status"}  # its own identity and timing
    for slot in set(slots) - differing:
        assert getattr(made, slot) == getattr(reference, slot), slot
    assert made.end_ns is not None
    assert reference.end_ns is None
