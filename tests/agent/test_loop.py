"""The agent loop on the scripted provider: the exact event sequence for each
behaviour, and the summary agreeing with the events."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import pytest

import steptrace
from steptrace import (
    BudgetExhausted,
    ContextCompaction,
    HookContext,
    LoopIntervention,
    PhaseChange,
    ToolExecution,
)
from steptrace.agent import (
    AgentResult,
    Compaction,
    LoopDetection,
    Phase,
    ToolPolicy,
    aagent_loop,
    agent_loop,
    tool,
)
from steptrace.llm import LlmRequest, ToolCall
from steptrace.testing import ScriptedProvider

FILES = {"notes.txt": "Buy milk.", "plan.md": "1. read 2. write"}


@tool(classification="read_only")
def read_file(path: str) -> str:
    """Read a file of the workspace."""
    if path not in FILES:
        raise FileNotFoundError(path)
    return FILES[path]


@tool(classification="workspace_write")
def write_file(path: str, text: str) -> str:
    """Write a file of the workspace."""
    return f"wrote {len(text)} characters to {path}"


@tool(classification="destructive", requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


@tool(classification="read_only")
async def slow_lookup(key: str) -> str:
    """Look a key up slowly."""
    await asyncio.sleep(0.2)
    return f"value of {key}"


@tool(classification="read_only", timeout=0.05)
async def hangs() -> str:
    """Never answers in time."""
    await asyncio.sleep(5)
    return "too late"


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(id=f"call_{name}_{len(arguments)}", name=name, arguments=arguments)


E = TypeVar("E")


def events_of(result: AgentResult, kind: type[E]) -> list[E]:
    return [e for e in result.events if isinstance(e, kind)]


def kinds(result: AgentResult) -> list[str]:
    return [type(e).__name__ for e in result.events]


def run_loop(replies: Sequence[Any], **options: Any) -> AgentResult:
    options.setdefault("tools", [read_file, write_file, delete_file, slow_lookup, hangs])
    options.setdefault("model", "m")
    return agent_loop("Tidy the workspace.", provider=ScriptedProvider(list(replies)), **options)


def test_a_tool_turn_then_an_answer_is_done_with_the_seed_event_sequence() -> None:
    with steptrace.run() as run:
        result = run_loop([[call("read_file", path="notes.txt")], "The note says: buy milk."])
    assert result.status == "done"
    assert result.text == "The note says: buy milk."
    assert result.iterations == 2
    assert kinds(result) == ["LlmCall", "ToolExecution", "LlmCall", "LoopComplete"]
    execution = result.events[1]
    assert execution.to_dict() == {
        "type": "tool_execution",
        "tool_name": "read_file",
        "tool_use_id": "call_read_file_1",
        "duration_ms": execution.duration_ms,  # type: ignore[union-attr]
        "status": "ok",
        "classification": "read_only",
        "iteration": 1,
    }
    assert [e.iteration for e in result.events[:3]] == [1, 1, 2]  # type: ignore[union-attr]
    assert [m.role for m in result.transcript] == ["user", "assistant", "tool", "assistant"]
    assert result.transcript[2].content == "Buy milk."
    assert result.summary == steptrace.summarize_events(result.events)
    assert result.summary["status"] == "done"
    assert result.summary["tools_used"] == ["read_file"]
    assert run.events == list(result.events)


def test_unknown_tools_bad_arguments_and_policy_are_rejected_and_the_loop_goes_on() -> None:
    result = run_loop(
        [
            [
                call("launch_rockets"),
                call("read_file", path=3),
                call("write_file", path="a", text="b"),
            ],
            "ok",
        ],
        tool_policy=ToolPolicy(deny=["write_*"]),
    )
    assert result.status == "done"
    assert kinds(result) == [
        "LlmCall",
        "ToolRejected",
        "ToolRejected",
        "ToolRejected",
        "LlmCall",
        "LoopComplete",
    ]
    reasons = [e.reason for e in result.events[1:4]]  # type: ignore[union-attr]
    assert reasons[0].startswith("unknown tool `launch_rockets`")
    assert reasons[1].startswith("invalid arguments: path")
    assert "denied by policy (write_*)" in reasons[2]
    tool_messages = [m for m in result.transcript if m.role == "tool"]
    assert all(m.content.startswith("Tool call rejected: ") for m in tool_messages)
    assert result.summary["tool_rejections"] == 3


def test_repeated_identical_calls_warn_then_block_then_skip() -> None:
    same = [call("read_file", path="notes.txt")]
    result = run_loop(
        [same] * 6 + ["giving up"], loop_detection=LoopDetection(warn_after=3, block_after=5)
    )
    interventions = [(e.kind, e.count) for e in events_of(result, LoopIntervention)]
    assert interventions == [("warn", 3), ("warn", 4), ("block", 5), ("skip", 6)]
    executions = [e.status for e in events_of(result, ToolExecution)]
    assert executions == ["ok"] * 5 + ["rejected"]
    results = [m.content for m in result.transcript if m.role == "tool"]
    assert results[2].startswith("Buy milk.")
    assert results[2] != "Buy milk."  # the warning note is appended
    assert "Buy milk." not in results[4]  # blocked: the note replaces the result
    assert result.summary["interventions"] == 4


def test_tool_calls_in_one_turn_run_concurrently_and_answer_in_order() -> None:
    arrived: list[str] = []
    both_here = asyncio.Event()

    @tool(classification="read_only", timeout=5)
    async def meet(who: str) -> str:
        """Wait until both callers have arrived (only possible if they run together)."""
        arrived.append(who)
        if len(arrived) == 2:
            both_here.set()
        await both_here.wait()
        return f"{who} met {len(arrived) - 1} other"

    calls = [
        ToolCall(id="first", name="meet", arguments={"who": "a"}),
        ToolCall(id="second", name="meet", arguments={"who": "b"}),
    ]
    result = run_loop([calls, "both met"], tools=[meet])
    # Run one after the other, the first call would wait for the second until
    # its timeout and end as an error.
    assert [e.status for e in events_of(result, ToolExecution)] == ["ok", "ok"]
    answers = [m.content for m in result.transcript if m.role == "tool"]
    assert answers == ["a met 1 other", "b met 1 other"]
    assert [m.tool_call_id for m in result.transcript if m.role == "tool"] == ["first", "second"]


def test_a_raising_tool_and_a_timeout_are_error_results_the_model_sees() -> None:
    result = run_loop([[call("read_file", path="missing.txt"), call("hangs")], "noted"])
    statuses = [e.status for e in events_of(result, ToolExecution)]
    assert statuses == ["error", "error"]
    answers = [m.content for m in result.transcript if m.role == "tool"]
    assert answers[0] == "Tool error: FileNotFoundError: missing.txt"
    assert "timed out" in answers[1]
    assert result.status == "done"
    assert result.summary["tools_used"] == ["read_file", "hangs"]
    assert list(result.events[-1].successful_tools) == []  # type: ignore[union-attr]


def test_approval_is_required_granted_and_denied() -> None:
    no_approver = run_loop([[call("delete_file", path="x")], "fine"])
    assert "no approver is registered" in no_approver.events[1].reason  # type: ignore[union-attr]
    decisions = iter([True, False])

    @steptrace.on("OnApprovalRequested")
    def approve(context: HookContext) -> bool:
        assert context.payload["tool"] == "delete_file"
        return next(decisions)

    result = run_loop([[call("delete_file", path="x")], [call("delete_file", path="y")], "done"])
    assert kinds(result)[1:4] == ["ToolExecution", "LlmCall", "ToolRejected"]
    assert result.events[3].reason == "approval for `delete_file` was denied"  # type: ignore[union-attr]


def test_pre_and_post_tool_use_hooks_deny_and_rewrite() -> None:
    @steptrace.on("PreToolUse")
    def guard(context: HookContext) -> Any:
        if context.payload["arguments"].get("path") == "secret.txt":
            return False
        if context.payload["tool"] == "read_file":
            return {"path": "plan.md"}
        return None

    @steptrace.on("PostToolUse")
    def shout(context: HookContext) -> str:
        return str(context.payload["result"]).upper()

    result = run_loop(
        [
            [call("write_file", path="secret.txt", text="x"), call("read_file", path="notes.txt")],
            "ok",
        ]
    )
    assert result.events[1].reason == "denied by a PreToolUse hook"  # type: ignore[union-attr]
    answers = [m.content for m in result.transcript if m.role == "tool"]
    assert answers[1] == "1. READ 2. WRITE"


def test_phases_move_by_tool_by_cap_and_limit_the_tools() -> None:
    phases = [
        Phase("plan", tools=["read_*"], max_iterations=5),
        Phase("act", tools=["write_*"], max_iterations=1),
        Phase("verify", tools=["read_*"]),
    ]
    offered: list[list[str]] = []

    def model(request: LlmRequest) -> Any:
        offered.append([t.name for t in request.tools])
        turn = len(offered)
        if turn == 1:
            return [call("write_file", path="a", text="b")]  # not offered in plan
        if turn == 2:
            return [call("next_phase")]
        if turn == 3:
            return [call("write_file", path="a", text="b")]
        return "verified"

    result = agent_loop(
        "Do it.",
        tools=[read_file, write_file],
        model="m",
        provider=ScriptedProvider(model),
        phases=phases,
    )
    assert offered[0] == ["read_file", "next_phase"]
    assert offered[2] == ["write_file", "next_phase"]
    assert offered[3] == ["read_file"]
    changes = [(e.from_phase, e.to_phase, e.iteration) for e in events_of(result, PhaseChange)]
    assert changes == [("plan", "act", 2), ("act", "verify", 4)]
    assert "not available in phase `plan`" in result.events[1].reason  # type: ignore[union-attr]


def test_compaction_archives_old_turns_and_keeps_them_in_the_transcript() -> None:
    replies: list[Any] = [[call("read_file", path="plan.md")] for _ in range(6)] + ["done"]
    result = run_loop(
        replies,
        compaction=Compaction(max_tokens=120, keep_last=2),
        loop_detection=LoopDetection(enabled=False),
    )
    compactions = events_of(result, ContextCompaction)
    assert compactions
    first = compactions[0]
    assert first.archived_messages > 0
    assert first.new_summary_len > 0
    assert len(result.transcript) > len(result.messages)
    assert any("Summary of earlier work" in m.content for m in result.messages)
    assert result.summary["compactions"] == len(compactions)


def test_max_iterations_and_rejected_turns_end_the_loop() -> None:
    looping = run_loop(
        [[call("read_file", path="notes.txt")]] * 3,
        max_iterations=3,
        loop_detection=LoopDetection(enabled=False),
    )
    assert looping.status == "max_iterations"
    assert looping.iterations == 3
    rejected = run_loop([[call("nope")]] * 3, max_rejected_turns=3)
    assert rejected.status == "rejected"
    assert rejected.events[-1].to_dict()["status"] == "rejected"


@pytest.mark.parametrize("boundary", ["continue", "fail", "escalate"])
def test_budget_exhaustion_mid_loop_stops_cleanly_per_boundary(boundary: str) -> None:
    replies = [[call("read_file", path="notes.txt")]] * 20

    def go() -> AgentResult:
        return run_loop(
            replies,
            budget={"max_tokens": 2_500},
            error_boundary=boundary,
            loop_detection=LoopDetection(enabled=False),
        )

    with steptrace.run() as run:
        if boundary == "continue":
            result = go()
        else:
            with pytest.raises(BudgetExhausted) as caught:
                go()
            assert caught.value.escalated == (boundary == "escalate")
            result = caught.value.agent_result  # type: ignore[attr-defined]
    assert result.status == "budget_exhausted"
    assert result.iterations >= 1
    assert kinds(result)[-1] == "LoopComplete"
    assert result.summary["status"] == "budget_exhausted"
    expected = {"continue": "skipped", "fail": "failed", "escalate": "escalated"}[boundary]
    assert run.completed_steps[-1].name == "agent_loop"
    assert run.completed_steps[-1].status == expected


def test_cancellation_emits_loop_complete_and_propagates() -> None:
    async def main() -> AgentResult:
        task = asyncio.create_task(
            aagent_loop(
                "t",
                tools=[slow_lookup],
                model="m",
                provider=ScriptedProvider([[call("slow_lookup", key="k")]] * 3),
            )
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
        result: AgentResult = caught.value.agent_result  # type: ignore[attr-defined]
        return result

    with steptrace.run() as run:
        result = asyncio.run(main())
    assert result.status == "cancelled"
    assert type(run.events[-1]).__name__ == "LoopComplete"


def test_llm_compaction_summarizes_with_a_model_call_that_is_accounted() -> None:
    def model(request: LlmRequest) -> Any:
        prompt = request.messages[-1].content
        if prompt.startswith("Summarize this earlier part"):
            return "Read plan.md several times; nothing new."
        if sum(1 for m in request.messages if m.role == "assistant") >= 5:
            return "done"
        return [call("read_file", path="plan.md")]

    with steptrace.run() as run:
        result = agent_loop(
            "Study the plan.",
            tools=[read_file],
            model="m",
            provider=ScriptedProvider(model),
            compaction=Compaction(max_tokens=100, keep_last=2, strategy="llm"),
            loop_detection=LoopDetection(enabled=False),
        )
    summaries = [m for m in result.messages if m.name == "steptrace_summary"]
    assert summaries
    assert "Read plan.md several times" in summaries[-1].content
    compactions = events_of(result, ContextCompaction)
    assert compactions[0].new_summary_len == len("Read plan.md several times; nothing new.")
    assert result.usage.llm_calls == run.usage().llm_calls  # the summarizer is paid for


def test_a_phase_ends_when_its_exit_condition_holds() -> None:
    def plan_read(transcript: Sequence[Any]) -> bool:
        return any(m.role == "tool" for m in transcript)

    result = run_loop(
        [[call("read_file", path="plan.md")], "acting now"],
        phases=[Phase("plan", exit_when=plan_read), Phase("act")],
    )
    assert [(e.from_phase, e.to_phase) for e in events_of(result, PhaseChange)] == [("plan", "act")]
    assert result.status == "done"


def test_a_provider_error_ends_the_loop_as_error_with_the_result_attached() -> None:
    from steptrace.llm import BadRequest

    with pytest.raises(BadRequest) as caught:
        run_loop([[call("read_file", path="notes.txt")], BadRequest("bad", provider="scripted")])
    result: AgentResult = caught.value.agent_result  # type: ignore[attr-defined]
    assert result.status == "error"
    assert result.iterations == 2
    assert kinds(result)[-1] == "LoopComplete"
    assert result.summary["tool_executions"] == 1


def test_a_sync_tool_with_thread_false_runs_in_the_loops_thread_beside_a_blocked_threaded_one() -> (
    None
):
    # The unthreaded tool is called in the thread running the loop; a threaded
    # one that blocks still ends at its timeout, and both are recorded alike.
    threads: dict[str, int] = {}
    release = threading.Event()

    @tool(classification="read_only", thread=False)
    def count_words(text: str) -> int:
        """Count the words of a text."""
        threads["count_words"] = threading.get_ident()
        return len(text.split())

    @tool(classification="read_only", timeout=0.1)
    def stuck() -> str:
        """Block until released."""
        threads["stuck"] = threading.get_ident()
        release.wait(5)
        return "too late"

    started = time.perf_counter()
    try:
        with steptrace.run():
            result = run_loop(
                [[call("count_words", text="a b c"), call("stuck")], "Three words."],
                tools=[count_words, stuck],
            )
    finally:
        release.set()
    assert time.perf_counter() - started < 2
    assert threads["count_words"] == threading.get_ident()  # agent_loop runs here
    assert threads["stuck"] != threading.get_ident()
    assert result.status == "done"
    executions = [(e.tool_name, e.status) for e in events_of(result, ToolExecution)]
    assert executions == [("count_words", "ok"), ("stuck", "error")]
    answers = [m.content for m in result.messages if m.role == "tool"]
    assert answers == ["3", "Tool error: tool `stuck` timed out after 0.1 s"]


class _Stop(BaseException):
    """An exception a tool should never raise, which ends the loop."""


def test_a_cancelled_loop_cancels_every_running_tool_and_waits_for_them() -> None:
    cancelled: list[str] = []

    @tool(classification="read_only")
    async def first() -> str:
        """Wait."""
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # a tool that takes a moment to stop
            cancelled.append("first")
            raise
        return "late"

    @tool(classification="read_only")
    async def second() -> str:
        """Wait too."""
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append("second")
            raise
        return "late"

    async def main() -> AgentResult:
        task = asyncio.create_task(
            aagent_loop(
                "t",
                tools=[first, second],
                model="m",
                provider=ScriptedProvider([[call("first"), call("second")]]),
            )
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
        assert sorted(cancelled) == ["first", "second"]  # both stopped before the loop ended
        result: AgentResult = caught.value.agent_result  # type: ignore[attr-defined]
        return result

    with steptrace.run() as run:
        result = asyncio.run(main())
    assert result.status == "cancelled"
    tool_spans = [s for s in run.spans if s.name.startswith("tool ")]
    assert sorted((s.name, s.status) for s in tool_spans) == [
        ("tool first", "error"),
        ("tool second", "error"),
    ]


@pytest.mark.parametrize("kind", [_Stop, asyncio.CancelledError])
def test_a_tool_raising_what_is_not_an_exception_ends_the_loop_once_the_turn_is_done(
    kind: type[BaseException],
) -> None:
    # As SystemExit does: the turn's other tools finish first, then the loop
    # ends with it (a CancelledError of the tool's own, not a cancellation of
    # the loop, is reported as one all the same).
    finished: list[str] = []

    @tool(classification="read_only")
    async def breaks() -> str:
        """Break."""
        raise kind

    @tool(classification="read_only")
    async def waits() -> str:
        """Wait a little."""
        await asyncio.sleep(0.1)
        finished.append("waits")
        return "done"

    async def main() -> AgentResult:
        with pytest.raises(kind) as caught:
            await aagent_loop(
                "t",
                tools=[waits, breaks],
                model="m",
                provider=ScriptedProvider([[call("breaks"), call("waits")]]),
            )
        assert finished == ["waits"]
        result: AgentResult = caught.value.agent_result  # type: ignore[attr-defined]
        return result

    with steptrace.run() as run:
        result = asyncio.run(main())
    assert result.status == ("cancelled" if kind is asyncio.CancelledError else "error")
    assert kinds(result) == ["LlmCall", "LoopComplete"]
    spans = sorted((s.name, s.metadata.get("steptrace.status")) for s in run.spans)
    assert ("tool breaks", "error") in spans
    assert ("tool waits", "ok") in spans


def test_a_turn_mixing_unthreaded_threaded_and_async_tools_runs_and_records_in_call_order() -> None:
    @tool(classification="read_only", thread=False)
    def first(n: int) -> str:
        """First."""
        return f"first {n}"

    @tool(classification="read_only")
    async def second(n: int) -> str:
        """Second."""
        await asyncio.sleep(0)
        return f"second {n}"

    @tool(classification="read_only", thread=False)
    def third(n: int) -> str:
        """Third."""
        return f"third {n}"

    @tool(classification="read_only")
    def fourth(n: int) -> str:
        """Fourth, in a tool thread."""
        return f"fourth {n}"

    names = ["first", "second", "third", "fourth"]
    turn = [ToolCall(id=f"c{i}", name=name, arguments={"n": i}) for i, name in enumerate(names)]
    with steptrace.run() as run:
        result = run_loop([turn, "Done."], tools=[first, second, third, fourth])
    assert [m.content for m in result.messages if m.role == "tool"] == [
        "first 0",
        "second 1",
        "third 2",
        "fourth 3",
    ]
    assert [e.tool_name for e in events_of(result, ToolExecution)] == names
    tool_spans = [s for s in run.spans if s.name.startswith("tool ")]
    assert [s.name for s in tool_spans] == [f"tool {name}" for name in names]
    assert [s.metadata["gen_ai.tool.call.id"] for s in tool_spans] == ["c0", "c1", "c2", "c3"]
    assert all(s.metadata["steptrace.status"] == "ok" for s in tool_spans)
