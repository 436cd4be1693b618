"""Code run in worker processes (spawned: everything here is importable). They
price calls with ``FakePrices()``: one microdollar a token, so every cost is a
whole number of picodollars."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import steptrace
from steptrace._shared import SharedBudget, pool_from_url
from steptrace.testing import FakePrices


def budget_from(spec: dict[str, Any]) -> SharedBudget:
    return SharedBudget.from_carrier(spec, "test budget")


def hammer(spec: dict[str, Any], preflight: bool, seed: int) -> dict[str, Any]:
    """Make calls against one shared budget until it refuses; return this
    process's own ledger. With ``preflight`` each call reserves its worst case
    (100 + 100 tokens) first, as ``llm_call`` does; without, usage is only
    recorded and the budget raises after the call that crossed it."""
    steptrace.configure(price_source=FakePrices())
    budget = budget_from(spec)
    rng = random.Random(seed)
    largest = 0
    with steptrace.run(f"hammer-{seed}", budget=budget) as run:
        try:
            while True:
                if preflight:
                    steptrace.check_budget("m", 100, 100)
                input_tokens, output_tokens = rng.randint(10, 100), rng.randint(1, 100)
                largest = max(largest, input_tokens + output_tokens)
                steptrace.record_llm_usage("m", input_tokens, output_tokens)
        except steptrace.BudgetExhausted as exc:
            error = exc.to_dict()
    usage = run.usage()
    return {
        "tokens": usage.total_tokens,
        "pico": round(usage.cost_usd * 10**12),
        "calls": usage.llm_calls,
        "largest": largest,
        "error": error,
    }


def reserve_and_hang(spec: dict[str, Any], ready: Any) -> None:
    """Reserve a call's worst case, say so, then wait to be killed."""
    steptrace.configure(price_source=FakePrices())
    budget = budget_from(spec)
    with steptrace.run("doomed", budget=budget):
        steptrace.check_budget("m", 400, 400)
        ready.put(os.getpid())
        while True:
            time.sleep(1)


def continue_run(carrier: dict[str, Any], store_path: str, tokens: int) -> dict[str, Any]:
    """A worker: record into the shared SQLite store, continue the carrier's run,
    make two calls in a step, and report what it saw."""
    from steptrace.store import record_runs

    steptrace.configure(price_source=FakePrices())
    writer = record_runs(store_path)
    try:

        @steptrace.step(name="worker_step")
        def work() -> None:
            steptrace.check_budget("m", tokens, 0)
            steptrace.record_llm_usage("m", tokens, 0)
            steptrace.emit_event(
                steptrace.LlmCall(
                    call_id=f"worker-{os.getpid()}",
                    model="m",
                    input_tokens=tokens,
                    output_tokens=0,
                    cache_tokens=0,
                    duration_ms=1,
                    iteration=0,
                )
            )

        with steptrace.extract(carrier) as run:
            work()
        root = run.root
        return {
            "run_id": run.id,
            "root_span_id": root.span_id,
            "root_parent_id": root.parent_id,
            "tokens": run.usage().total_tokens,
            "is_continuation": run.is_continuation,
        }
    finally:
        writer.stop()


def continue_run_in_otel(carrier: dict[str, Any]) -> list[tuple[str, int, int, int | None]]:
    """A worker exporting live to OpenTelemetry: continue the carrier's run and
    return each finished span as (name, trace id, span id, parent span id)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from steptrace.export import OpenTelemetryExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    steptrace.add_span_processor(OpenTelemetryExporter(provider))

    @steptrace.step(name="worker_step")
    def work() -> None:
        pass

    with steptrace.extract(carrier):
        work()
    return [
        (
            span.name,
            span.context.trace_id,
            span.context.span_id,
            None if span.parent is None else span.parent.span_id,
        )
        for span in memory.get_finished_spans()
    ]


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


__all__ = ["budget_from", "continue_run", "hammer", "kill", "pool_from_url"]
