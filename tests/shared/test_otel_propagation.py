"""The live OpenTelemetry bridge across processes: a worker that continues a
run (``extract``) exports its spans into the parent's trace, under the
OpenTelemetry span of the span that injected."""

from __future__ import annotations

import multiprocessing

import pytest

import steptrace

from . import _workers

pytest.importorskip("opentelemetry.sdk")


def test_a_continued_run_joins_the_parents_live_trace() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from steptrace.export import OpenTelemetryExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    exporter = OpenTelemetryExporter(provider)
    steptrace.add_span_processor(exporter)
    context = multiprocessing.get_context("spawn")
    try:
        with steptrace.run("parent"), steptrace.span("fan-out"):
            carrier = steptrace.inject()
            with context.Pool(1) as workers:
                worker_spans = workers.apply(_workers.continue_run_in_otel, (carrier,))
    finally:
        steptrace.remove_span_processor(exporter)
        provider.shutdown()
    assert exporter.failures == 0
    fan_out = next(s for s in memory.get_finished_spans() if s.name == "fan-out")
    # The carrier holds the live ids of the injecting span.
    assert carrier["traceparent"] == (
        f"00-{fan_out.context.trace_id:032x}-{fan_out.context.span_id:016x}"
        f"-{fan_out.context.trace_flags:02x}"
    )
    assert len(worker_spans) == 2  # the worker's run root and its step
    root = next(item for item in worker_spans if item[3] == fan_out.context.span_id)
    step = next(item for item in worker_spans if item is not root)
    assert root[1] == step[1] == fan_out.context.trace_id
    assert step[3] == root[2]
