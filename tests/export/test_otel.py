"""The OpenTelemetry bridge on a real SDK tracer provider: the exported tree and
trace ids, GenAI and steptrace attributes, error statuses, agent events as span
events, the default run, late registration, and failures kept from the run."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import steptrace
import steptrace.export
from steptrace import PhaseChange, SpanKind
from steptrace.agent import agent_loop
from steptrace.export import OpenTelemetryExporter
from steptrace.llm import llm_call
from steptrace.testing import ScriptedProvider

from .helpers import SCENARIO_TREE, Otel, attributes_of, run_scenario, tree

SRC = Path(__file__).resolve().parents[2] / "src"


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def assert_parents_match(run: steptrace.Run, otel: Otel) -> None:
    """Every span of ``run`` exported once, with its times, under its parent."""
    exported = otel.by_steptrace_id()
    assert sorted(exported) == sorted(span.span_id for span in run.spans)
    otel_ids = {sid: span.context.span_id for sid, span in exported.items() if span.context}
    for span in run.spans:
        mine = exported[span.span_id]
        assert (mine.start_time, mine.end_time) == (span.start_ns, span.end_ns)
        if span.parent_id is None:
            assert mine.parent is None
        else:
            assert mine.parent is not None
            assert mine.parent.span_id == otel_ids[span.parent_id]


def test_the_package_surface_is_frozen() -> None:
    assert steptrace.export.__all__ == [
        "ExportFormat",
        "OpenTelemetryExporter",
        "export_run",
        "jsonl_records",
        "otlp_json",
        "otlp_span_id",
        "otlp_trace_id",
    ]


def test_a_run_is_one_trace_with_the_steptrace_tree_and_times(otel: Otel) -> None:
    run = run_scenario()
    spans = otel.spans()
    assert tree(spans) == SCENARIO_TREE
    assert len({span.context.trace_id for span in spans if span.context}) == 1
    # Every steptrace span is exported once, with its times and its parent.
    assert_parents_match(run, otel)
    root = otel.by_steptrace_id()[run.root.span_id]
    assert attributes_of(root)["steptrace.run.id"] == run.id


def test_llm_requests_follow_the_genai_chat_convention(otel: Otel) -> None:
    run = run_scenario()
    chats = named(otel.spans(), "chat gpt-4o")
    assert len(chats) == 3
    assert all(span.kind is otel_trace.SpanKind.CLIENT for span in chats)
    plan_chat = next(s for s in chats if attributes_of(s)["steptrace.step"] == "plan")
    attributes = attributes_of(plan_chat)
    [entry, *_] = run.llm_trace
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.response.model"] == "gpt-4o"
    assert attributes["gen_ai.system"] == attributes["gen_ai.provider.name"] == "scripted"
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.usage.input_tokens"] == entry.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == entry.output_tokens
    assert attributes["steptrace.cost_usd"] == pytest.approx(entry.cost_usd)
    assert attributes["steptrace.persona"] == "writer"
    assert attributes["steptrace.span.kind"] == "llm_call"
    agent_chats = [s for s in chats if s is not plan_chat]
    assert [attributes_of(s)["steptrace.agent.iteration"] for s in agent_chats] == [1, 2]
    assert [attributes_of(s)["gen_ai.request.max_tokens"] for s in agent_chats] == [200, 200]


def test_tools_and_agent_loops_follow_the_genai_convention(otel: Otel) -> None:
    run = run_scenario()
    [tool] = named(otel.spans(), "execute_tool read_file")
    attributes = attributes_of(tool)
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "read_file"
    assert attributes["gen_ai.tool.call.id"] == "call_1"
    assert attributes["steptrace.classification"] == "read_only"
    assert attributes["steptrace.status"] == "ok"
    assert attributes["steptrace.step"] == "researcher"
    assert tool.status.status_code is StatusCode.UNSET

    [agent] = named(otel.spans(), "invoke_agent researcher")
    attributes = attributes_of(agent)
    row = next(r for r in run.completed_steps if r.name == "researcher")
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["gen_ai.agent.name"] == "researcher"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    assert attributes["gen_ai.usage.input_tokens"] == row.input_tokens > 0
    assert attributes["gen_ai.usage.output_tokens"] == row.output_tokens > 0
    assert attributes["steptrace.function"] == "agent_loop"
    assert attributes["steptrace.budget.max_tokens"] == 20_000
    assert attributes["steptrace.llm_calls"] == 2


def test_steps_personas_and_runs_carry_steptrace_attributes(otel: Otel) -> None:
    run = run_scenario()
    spans = otel.spans()
    [plan] = named(spans, "plan")
    row = next(r for r in run.completed_steps if r.name == "plan")
    attributes = attributes_of(plan)
    assert "gen_ai.operation.name" not in attributes  # a plain step is no GenAI operation
    assert attributes == {
        "steptrace.span.kind": "step",
        "steptrace.span.id": row.span_id,
        "steptrace.run.id": run.id,
        "steptrace.step": "plan",
        "steptrace.function": "run_scenario.<locals>.plan",
        "steptrace.error_boundary": "fail",
        "steptrace.persona": "writer",
        "steptrace.model": "gpt-4o",
        "steptrace.status": "completed",
        "steptrace.llm_calls": 1,
        "steptrace.input_tokens": row.input_tokens,
        "steptrace.output_tokens": row.output_tokens,
        "steptrace.cost_usd": pytest.approx(row.cost_usd),
        "steptrace.budget.max_tokens": 5000,
        "steptrace.budget.max_usd": 1.0,
    }
    usage = run.usage()
    [persona] = named(spans, "writer")
    attributes = attributes_of(persona)
    assert attributes["steptrace.persona"] == "writer"
    assert attributes["steptrace.status"] == "completed"
    assert attributes["steptrace.llm_calls"] == usage.llm_calls == 3
    assert attributes["steptrace.cost_usd"] == pytest.approx(usage.cost_usd)
    assert attributes["steptrace.budget.max_usd"] == 2.0
    assert "steptrace.budget.max_tokens" not in attributes  # no limit: no attribute
    [root] = named(spans, "demo")
    attributes = attributes_of(root)
    assert attributes["steptrace.run.name"] == "demo"
    assert attributes["steptrace.run.metadata.ticket"] == 42
    assert attributes["steptrace.input_tokens"] == usage.input_tokens
    assert attributes["steptrace.budget.max_tokens"] == 100_000
    assert all(value is not None for span in spans for value in attributes_of(span).values())


def test_agent_events_become_span_events_where_they_were_emitted(otel: Otel) -> None:
    run = run_scenario()
    exported = otel.by_steptrace_id()
    seen = [
        (sid, event.name, dict(event.attributes or {}))
        for sid, span in sorted(exported.items())
        for event in span.events
    ]
    expected = sorted(
        ((sid, "steptrace." + e.type) for sid, e in run.events_by_span()), key=lambda p: p[0]
    )
    assert [(sid, name) for sid, name, _ in seen] == expected
    [agent] = named(otel.spans(), "invoke_agent researcher")
    names = [event.name for event in agent.events]
    assert names == ["steptrace.tool_execution", "steptrace.loop_complete"]
    tool_event, complete = (dict(e.attributes or {}) for e in agent.events)
    assert tool_event["tool_name"] == "read_file"
    assert tool_event["status"] == "ok"
    assert tool_event["tool_use_id"] == "call_1"
    assert complete["status"] == "done"
    assert complete["tools_used"] == ("read_file",)
    assert complete["successful_tools"] == ("read_file",)
    for span in otel.spans():
        for event in span.events:
            assert span.start_time is not None
            assert span.end_time is not None
            assert span.start_time <= event.timestamp <= span.end_time


def _only_chat_events(spans: list[ReadableSpan]) -> list[list[str]]:
    return [[e.name for e in s.events] for s in named(spans, "chat gpt-4o")]


def test_every_llm_request_span_has_its_llm_call_event(otel: Otel) -> None:
    run_scenario()
    assert _only_chat_events(otel.spans()) == [["steptrace.llm_call"]] * 3
    for span in named(otel.spans(), "chat gpt-4o"):
        [event] = span.events
        attributes = dict(event.attributes or {})
        assert attributes["input_tokens"] == attributes_of(span)["gen_ai.usage.input_tokens"]
        assert attributes["model"] == "gpt-4o"


def test_failures_are_error_statuses_with_the_recorded_error(otel: Otel) -> None:
    @steptrace.step
    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"), steptrace.run("bad"):
        broken()
    spans = otel.spans()
    [step] = named(spans, "broken")
    assert step.status.status_code is StatusCode.ERROR
    assert step.status.description == "ValueError: boom"
    assert attributes_of(step)["error.type"] == "ValueError"
    assert attributes_of(step)["steptrace.error"] == "ValueError: boom"
    assert attributes_of(step)["steptrace.status"] == "failed"
    [root] = named(spans, "bad")
    assert root.status.status_code is StatusCode.ERROR
    assert attributes_of(root)["steptrace.status"] == "failed"


def test_a_skipped_step_and_a_failing_tool_are_errors(otel: Otel) -> None:
    @steptrace.step(model="gpt-4o", budget={"max_tokens": 10}, error_boundary="continue")
    def tiny() -> None:
        llm_call("word " * 100, provider=ScriptedProvider(["never sent"]))

    with steptrace.run("r"):
        tiny()
    run_scenario(tool_path="missing.txt")
    spans = otel.spans()
    [skipped] = named(spans, "tiny")
    assert skipped.status.status_code is StatusCode.ERROR
    assert attributes_of(skipped)["steptrace.status"] == "skipped"
    assert "max_tokens" in (skipped.status.description or "")
    assert attributes_of(skipped)["error.type"] == "_OTHER"
    [tool] = named(spans, "execute_tool read_file")
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.status.description == "tool `read_file` failed"
    assert attributes_of(tool)["steptrace.status"] == "error"
    [agent] = named(spans, "invoke_agent researcher")
    assert agent.status.status_code is StatusCode.UNSET  # the model saw the error and answered
    tool_event = dict(agent.events[0].attributes or {})
    assert tool_event["status"] == "error"


def test_each_run_is_its_own_trace_unless_opened_inside_an_otel_span(otel: Otel) -> None:
    with steptrace.run("one"), steptrace.span("a"):
        pass
    with steptrace.run("two"), steptrace.span("b"):
        pass
    request_tracer = otel.provider.get_tracer("web")
    with (
        request_tracer.start_as_current_span("GET /ask") as request,
        steptrace.run("three"),
        steptrace.span("c"),
    ):
        pass
    spans = {span.name: span for span in otel.spans()}
    traces = {name: span.context.trace_id for name, span in spans.items() if span.context}
    assert traces["one"] == traces["a"] != traces["two"] == traces["b"]
    request_context = request.get_span_context()
    assert traces["three"] == traces["c"] == request_context.trace_id
    three_parent = spans["three"].parent
    assert three_parent is not None
    assert three_parent.span_id == request_context.span_id


def test_the_default_run_is_not_a_span_and_each_top_level_span_a_trace(otel: Otel) -> None:
    @steptrace.step
    def alone() -> None:
        with steptrace.span("inside"):
            pass

    steptrace.reset()  # a fresh default run, its root opened while the exporter listens
    alone()
    alone()
    spans = otel.spans()
    assert [span.name for span in spans] == ["inside", "alone", "inside", "alone"]
    roots = [span for span in spans if span.parent is None]
    assert [span.name for span in roots] == ["alone", "alone"]
    assert len({span.context.trace_id for span in roots if span.context}) == 2


def test_concurrent_tasks_keep_their_parents(otel: Otel) -> None:
    @steptrace.step
    async def worker(index: int) -> None:
        with steptrace.span(f"work {index}"):
            await asyncio.sleep(0.01)

    async def main() -> steptrace.Run:
        async with steptrace.run("parallel") as run:
            await asyncio.gather(*(worker(i) for i in range(4)))
        return run

    run = asyncio.run(main())
    assert_parents_match(run, otel)
    assert tree(otel.spans()) == ["parallel"] + [
        line for i in range(4) for line in ("  worker", f"    work {i}")
    ]
    assert len({s.context.trace_id for s in otel.spans() if s.context}) == 1


def test_threads_keep_their_parents_and_their_events(otel: Otel) -> None:
    @steptrace.step
    def worker(index: int) -> None:
        for turn in range(20):
            with steptrace.span(f"turn {index}"):
                steptrace.emit_event(
                    PhaseChange(from_phase=str(index), to_phase=str(turn), iteration=turn)
                )

    with steptrace.run("threads") as run, ThreadPoolExecutor(4) as pool:
        list(pool.map(steptrace.bind(worker), range(4)))
    assert_parents_match(run, otel)
    for span in otel.spans():
        if span.name.startswith("turn "):
            [event] = span.events
            assert dict(event.attributes or {})["from_phase"] == span.name.removeprefix("turn ")
    assert sum(len(span.events) for span in otel.spans()) == 80


def test_events_taken_mid_run_do_not_confuse_later_spans(otel: Otel) -> None:
    with steptrace.run("r"):
        with steptrace.span("a"):
            steptrace.emit_event(PhaseChange(from_phase="x", to_phase="y", iteration=1))
        steptrace.take_agent_trace()
        with steptrace.span("b"):
            steptrace.emit_event(PhaseChange(from_phase="y", to_phase="z", iteration=2))
    spans = {span.name: span for span in otel.spans()}
    assert [dict(e.attributes or {})["to_phase"] for e in spans["a"].events] == ["y"]
    assert [dict(e.attributes or {})["to_phase"] for e in spans["b"].events] == ["z"]
    assert spans["r"].events == ()


def test_a_processor_added_mid_run_still_exports_what_ends_later() -> None:
    late = Otel()
    try:
        with steptrace.run("late") as run, steptrace.span("outer"):
            steptrace.add_span_processor(late.exporter)
            with steptrace.span("inner", kind=SpanKind.TOOL):
                pass
    finally:
        steptrace.remove_span_processor(late.exporter)
    exported = late.by_steptrace_id()
    assert sorted(span.name for span in exported.values()) == [
        "execute_tool inner",
        "late",
        "outer",
    ]
    for span in run.spans:
        assert exported[span.span_id].start_time == span.start_ns
        assert exported[span.span_id].end_time == span.end_ns
    assert late.exporter.failures == 0


class _BrokenTracer(otel_trace.NoOpTracer):
    def start_span(self, *args: Any, **kwargs: Any) -> otel_trace.Span:
        raise RuntimeError("collector down")


class _BrokenProvider(otel_trace.NoOpTracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> otel_trace.Tracer:
        return _BrokenTracer()


def test_a_broken_tracer_never_breaks_the_run(caplog: pytest.LogCaptureFixture) -> None:
    steptrace.configure(strict=False)
    exporter = OpenTelemetryExporter(_BrokenProvider())
    steptrace.add_span_processor(exporter)
    try:

        @steptrace.step
        def fine() -> int:
            return 7

        with caplog.at_level(logging.DEBUG, logger="steptrace.export"), steptrace.run("r") as run:
            assert fine() == 7
    finally:
        steptrace.remove_span_processor(exporter)
    assert run.status == "completed"
    assert exporter.failures == 4  # start and end of the run and of the step
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure logged with its traceback, the rest quietly


def test_in_strict_mode_an_export_failure_reaches_steptrace() -> None:
    exporter = OpenTelemetryExporter(_BrokenProvider())
    steptrace.add_span_processor(exporter)
    try:
        with pytest.raises(RuntimeError, match="collector down"), steptrace.run("r"):
            pass
    finally:
        steptrace.remove_span_processor(exporter)


def test_without_the_sdk_the_files_work_and_the_exporter_names_the_extra(tmp_path: Path) -> None:
    code = f"""
import sys
import steptrace, steptrace.export
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "export loaded otel"
for name in [m for m in sys.modules if m.startswith("opentelemetry")]:
    del sys.modules[name]
sys.modules["opentelemetry"] = None  # as if not installed
with steptrace.run("offline") as run, steptrace.span("s"):
    pass
steptrace.export.export_run(run, {str(tmp_path / "run.json")!r}, "otlp-json")
try:
    from steptrace.export import OpenTelemetryExporter
except ImportError as exc:
    print(exc)
"""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'steptrace[otel]'" in result.stdout
    assert (tmp_path / "run.json").read_text().startswith('{"resourceSpans"')


def test_an_agent_loop_without_a_budget_is_an_invoke_agent_span_too(otel: Otel) -> None:
    with steptrace.run("plain-agent"):
        agent_loop(
            "Say hi.", model="gpt-4o-mini", provider=ScriptedProvider(["hi"]), name="greeter"
        )
    [agent] = named(otel.spans(), "invoke_agent greeter")
    [chat] = named(otel.spans(), "chat gpt-4o-mini")
    assert attributes_of(agent)["gen_ai.operation.name"] == "invoke_agent"
    assert chat.parent is not None
    assert agent.context is not None
    assert chat.parent.span_id == agent.context.span_id
    assert [e.name for e in agent.events] == ["steptrace.loop_complete"]
