"""Usage that arrives after its scope ended is kept, counted and flagged, and a
run that ends over a limit says so (issue 10 case 3)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

import steptrace
from steptrace import _context


def test_a_thread_that_outlives_its_step_is_recorded_late() -> None:
    release = threading.Event()
    done = threading.Event()
    refusals: list[steptrace.BudgetExhausted] = []

    @steptrace.step
    def start_background() -> None:
        def late() -> None:
            release.wait(5)
            try:
                steptrace.record_llm_usage("m", 100, 100, cost_usd=1.0)
            except steptrace.BudgetExhausted as exc:
                refusals.append(exc)  # recorded first, then over the run's limit
            done.set()

        threading.Thread(target=steptrace.bind(late)).start()
        steptrace.record_llm_usage("m", 1, 1, cost_usd=0.01)

    with steptrace.run("job", budget={"max_usd": 0.5}) as run:
        start_background()
    assert run.status == "completed"
    release.set()
    assert done.wait(5)
    assert run.usage().cost_usd == 1.01
    assert run.status == "over_budget"
    assert run.late_calls == 1
    assert [r.scope for r in refusals] == ["run"]
    row = run.completed_steps[0]
    assert row.cost_usd == 1.01  # the ledger row is rebuilt, not left at $0.01
    assert row.llm_calls == 2
    assert [record.late for record in run.trace_records()] == [False, True]
    assert run.root.metadata["status"] == "over_budget"
    assert run.root.metadata["cost_usd"] == 1.01


def test_a_run_that_ends_over_its_limit_says_so() -> None:
    @steptrace.step(error_boundary="continue")
    def overspend() -> None:
        steptrace.record_llm_usage("m", 1, 1, cost_usd=2.0)

    with steptrace.run("job", budget={"max_usd": 1}) as run:
        overspend()  # recorded, then refused: skipped under `continue`
    assert run.completed_steps[0].status == "skipped"
    assert run.status == "over_budget"
    assert run.summary()["status"] == "over_budget"


def test_a_generator_step_resumed_after_its_run_charges_it_late() -> None:
    @steptrace.step
    def produce() -> Iterator[int]:
        yield 1
        steptrace.record_llm_usage("m", 5, 5, cost_usd=0.1)
        yield 2

    with steptrace.run("first") as first:
        items = produce()
        assert next(items) == 1
    with steptrace.run("second") as second:
        assert next(items) == 2
    assert first.late_calls == 1
    assert first.usage().cost_usd == 0.1
    assert second.usage().cost_usd == 0.0
    assert second.late_calls == 0


def test_a_processor_is_told_of_a_late_record() -> None:
    seen: list[steptrace.Span] = []

    class Amended:
        def on_start(self, span: steptrace.Span) -> None:
            pass

        def on_end(self, span: steptrace.Span) -> None:
            pass

        def on_amend(self, root: steptrace.Span) -> None:
            seen.append(root)

    processor = Amended()
    steptrace.add_span_processor(processor)
    try:
        with steptrace.run("job") as run:
            pass
        with steptrace.run("other"):
            pass
        # A straggler recording in the finished run's root, from a context
        # that still has it as its frame (as a thread started inside it would).
        straggler = contextvars.copy_context()
        straggler.run(_context.set_frame, run.root)
        straggler.run(steptrace.record_llm_usage, "m", 1, 1, cost_usd=0.0)
    finally:
        steptrace.remove_span_processor(processor)
    assert seen == [run.root]
    assert run.late_calls == 1
