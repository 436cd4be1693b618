"""Isolation of runs across asyncio tasks and threads, exact accounting from
concurrent children, and carrying the context across threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import steptrace
from steptrace import LlmCall


def _event(call_id: str, iteration: int) -> LlmCall:
    return LlmCall(
        call_id=call_id,
        model="m",
        input_tokens=iteration,
        output_tokens=1,
        cache_tokens=0,
        duration_ms=1,
        iteration=iteration,
    )


def test_a_thousand_concurrent_runs_see_only_their_own_state() -> None:
    @steptrace.step("fetch")
    async def fetch(i: int) -> None:
        await asyncio.sleep(0)
        steptrace.record_llm_usage("m", i, 1, cost_usd=0.0)
        await asyncio.sleep(0)
        steptrace.emit_event(_event(f"call-{i}", i))

    @steptrace.step("summarize")
    async def summarize(i: int) -> None:
        await asyncio.sleep(0)
        steptrace.record_llm_usage("m", 0, i, cost_usd=0.0)

    async def one(i: int) -> tuple[str, list[tuple[str, int, int]], list[str], int, int, bool]:
        async with steptrace.run(f"run-{i}") as r:
            await fetch(i)
            await asyncio.sleep(0)
            await summarize(i)
            inside = steptrace.current_run() is r
        rows = [(s.name, s.input_tokens, s.output_tokens) for s in r.completed_steps]
        calls = [e.call_id for e in r.events if isinstance(e, LlmCall)]
        usage = r.usage()
        return r.name, rows, calls, usage.input_tokens, usage.output_tokens, inside

    async def main() -> list[tuple[str, list[tuple[str, int, int]], list[str], int, int, bool]]:
        return await asyncio.gather(*(one(i) for i in range(1000)))

    results = asyncio.run(main())
    assert len(results) == 1000
    for i, (name, rows, calls, input_tokens, output_tokens, inside) in enumerate(results):
        assert name == f"run-{i}"
        assert rows == [("fetch", i, 1), ("summarize", 0, i)]
        assert calls == [f"call-{i}"]
        assert (input_tokens, output_tokens) == (i, 1 + i)
        assert inside
    # Nothing leaked into the default run of the calling context.
    assert steptrace.current_run().completed_steps == []
    assert steptrace.peek_agent_trace() == []


def test_two_threads_with_their_own_runs_are_isolated() -> None:
    barrier = threading.Barrier(2)
    results: dict[str, tuple[list[str], int, list[str]]] = {}

    @steptrace.step
    def work(tag: str) -> None:
        for n in range(50):
            barrier.wait()  # interleave the two threads step for step
            steptrace.record_llm_usage("m", 1, 0, cost_usd=0.0)
            if n == 0:
                steptrace.emit_event(_event(tag, 0))

    def thread_main(tag: str) -> None:
        with steptrace.run(tag) as r:
            work(tag)
            active = steptrace.current_step()
            assert active is None
        results[tag] = (
            [s.name for s in r.completed_steps],
            r.usage().input_tokens,
            [e.call_id for e in r.events if isinstance(e, LlmCall)],
        )

    threads = [threading.Thread(target=thread_main, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": (["work"], 50, ["a"]), "b": (["work"], 50, ["b"])}


def test_eight_threads_record_into_one_step_exactly() -> None:
    per_thread = 10_000

    def hammer() -> None:
        for _ in range(per_thread):
            steptrace.record_llm_usage("m", 1, 2, cost_usd=0.0001)

    crossings: list[float | None] = []
    steptrace.register_step_hook(
        "*", "shared", "OnBudgetThreshold(20)", lambda ctx: crossings.append(ctx.threshold_pct)
    )

    @steptrace.step("shared", budget={"max_tokens": 1_000_000, "max_usd": 100.0})
    def shared() -> steptrace.ActiveStep | None:
        bound = steptrace.bind(hammer)
        threads = [threading.Thread(target=bound) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return steptrace.current_step()

    active = shared()
    assert active is not None
    calls = 8 * per_thread
    assert (active.input_tokens, active.output_tokens, active.llm_calls) == (
        calls,
        2 * calls,
        calls,
    )
    assert active.cost_usd == 8.0
    assert active.budget_pct == 24.0
    assert crossings == [20.0]  # crossed by one of the threads, fired exactly once
    (row,) = steptrace.current_run().completed_steps
    assert (row.llm_calls, row.cost_usd, row.status) == (calls, 8.0, "completed")
    usage = steptrace.current_run().usage()
    assert (usage.llm_calls, usage.total_tokens, usage.cost_usd) == (calls, 3 * calls, 8.0)


def test_gathered_children_accumulate_into_the_parent_step() -> None:
    @steptrace.step("child")
    async def child() -> None:
        for _ in range(10):
            await asyncio.sleep(0)
            steptrace.record_llm_usage("m", 1, 1, cost_usd=0.001)

    async def bare() -> None:
        for _ in range(10):
            await asyncio.sleep(0)
            steptrace.record_llm_usage("m", 2, 0, cost_usd=0.0)

    @steptrace.step("parent", budget={"max_tokens": 10_000})
    async def parent() -> steptrace.ActiveStep | None:
        await asyncio.gather(*(child() for _ in range(50)), *(bare() for _ in range(50)))
        return steptrace.current_step()

    active = asyncio.run(parent())
    assert active is not None
    # The bare tasks' calls are the parent's own; the child steps' are theirs.
    assert (active.input_tokens, active.output_tokens, active.llm_calls) == (1000, 0, 500)
    assert active.budget_pct == 20.0  # 1000 own + 1000 from child steps, of 10,000
    rows = steptrace.current_run().completed_steps
    children = [r for r in rows if r.name == "child"]
    assert len(children) == 50
    assert all((r.llm_calls, r.input_tokens, r.status) == (10, 10, "completed") for r in children)
    assert all(r.cost_usd == 0.01 for r in children)
    assert steptrace.current_run().usage().cost_usd == 0.5
    assert steptrace.current_run().usage().llm_calls == 1000


def test_snapshot_and_restore_detach_the_stacks() -> None:
    seen: dict[str, object] = {}

    @steptrace.step("inner")
    def inner() -> None:
        snap = steptrace.snapshot_context()
        seen["detached"] = (steptrace.current_step(), steptrace.current_persona_name())
        seen["snap"] = (snap.steps, snap.personas)
        steptrace.record_llm_usage("m", 5, 0, cost_usd=0.0)  # goes to no step
        detached()
        steptrace.restore_context(snap)
        active = steptrace.current_step()
        seen["restored"] = (
            None if active is None else active.name,
            steptrace.current_persona_name(),
        )
        steptrace.record_llm_usage("m", 7, 0, cost_usd=0.0)

    @steptrace.step("detached")
    def detached() -> None:
        return None

    @steptrace.step("outer")
    def outer() -> None:
        inner()

    @steptrace.persona("p")
    def p() -> None:
        outer()

    with steptrace.run("r") as r:
        p()
    assert seen["detached"] == (None, None)
    assert seen["snap"] == (["outer", "inner"], ["p"])
    assert seen["restored"] == ("inner", "p")
    rows = {s.name: s for s in r.completed_steps}
    assert rows["inner"].input_tokens == 7
    assert rows["detached"].persona is None
    assert rows["inner"].persona == "p"
    assert r.usage().input_tokens == 12


def test_bind_carries_the_step_into_a_thread_pool() -> None:
    def look() -> str | None:
        active = steptrace.current_step()
        steptrace.record_llm_usage("m", 3, 0, cost_usd=0.0)
        return None if active is None else active.name

    @steptrace.persona("p")
    @steptrace.step("pooled")
    def pooled() -> tuple[list[str | None], list[str | None], str | None]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            bound = [pool.submit(steptrace.bind(look)).result() for _ in range(4)]
            persona = pool.submit(steptrace.bind(steptrace.current_persona_name)).result()
            unbound = [pool.submit(look).result()]
        return bound, unbound, persona

    with steptrace.run("r") as r:
        bound, unbound, persona = pooled()
    assert bound == ["pooled"] * 4
    assert persona == "p"
    assert unbound == [None]  # ThreadPoolExecutor does not copy the context
    (row,) = r.completed_steps
    assert (row.input_tokens, row.llm_calls) == (12, 4)


def test_to_thread_carries_the_step() -> None:
    def look() -> str | None:
        active = steptrace.current_step()
        steptrace.record_llm_usage("m", 2, 0, cost_usd=0.0)
        return None if active is None else active.name

    @steptrace.step("threaded")
    async def threaded() -> list[str | None]:
        return list(await asyncio.gather(*(asyncio.to_thread(look) for _ in range(3))))

    assert asyncio.run(threaded()) == ["threaded"] * 3
    (row,) = steptrace.current_run().completed_steps
    assert (row.input_tokens, row.llm_calls) == (6, 3)
