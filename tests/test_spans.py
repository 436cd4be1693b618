"""Spans: the seed's step metadata, parent links, user spans, processors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator

import pytest

import steptrace
from steptrace import InMemorySpanCollector, Span, SpanKind, record_llm_usage

Tree = list[tuple[str, str, str | None]]


def _tree(spans: Iterable[Span]) -> Tree:
    """(name, kind, parent name) for each span, in the order given."""
    spans = list(spans)
    by_id = {s.span_id: s for s in spans}
    return [
        (s.name, s.kind.value, None if s.parent_id is None else by_id[s.parent_id].name)
        for s in spans
    ]


def _root(run: steptrace.Run) -> Span:
    (root,) = [s for s in run.spans if s.kind is SpanKind.RUN]
    return root


def _by_name(spans: Iterable[Span], name: str) -> Span:
    (found,) = [s for s in spans if s.name == name]
    return found


# -- metadata ---------------------------------------------------------------------


def test_step_span_has_the_seed_metadata() -> None:
    @steptrace.step(name="draft", model="small-model")
    def draft() -> str:
        record_llm_usage("small-model", 10, 5, cost_usd=0.25)
        record_llm_usage("big-model", 1, 2, cost_usd=0.5)
        return "ok"

    @steptrace.persona(name="writer")
    def writer() -> str:
        return draft()

    with steptrace.run("r") as run:
        assert writer() == "ok"
    span = _by_name(run.spans, "draft")
    assert span.kind is SpanKind.STEP
    assert span.metadata == {
        "persona": "writer",
        "model": "small-model",
        "status": "completed",
        "llm_calls": 2,
        "input_tokens": 11,
        "output_tokens": 7,
        "cost_usd": 0.75,
    }
    assert span.status == "ok"
    assert span.error is None
    assert span.end_ns is not None
    assert span.end_ns >= span.start_ns
    assert span.run_id == run.id


def test_step_span_without_persona_or_model_omits_them() -> None:
    @steptrace.step
    def bare() -> None:
        pass

    with steptrace.run() as run:
        bare()
    assert _by_name(run.spans, "bare").metadata == {
        "status": "completed",
        "llm_calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
    }


def test_step_span_counts_own_calls_and_persona_span_counts_all() -> None:
    @steptrace.step
    def inner() -> None:
        record_llm_usage("m", 100, 1, cost_usd=1.0)

    @steptrace.step
    def outer() -> None:
        record_llm_usage("m", 10, 2, cost_usd=0.5)
        inner()

    @steptrace.persona
    def boss() -> None:
        outer()

    with steptrace.run() as run:
        boss()
    outer_md = _by_name(run.spans, "outer").metadata
    assert (outer_md["llm_calls"], outer_md["input_tokens"], outer_md["output_tokens"]) == (
        1,
        10,
        2,
    )
    assert outer_md["cost_usd"] == 0.5
    persona_span = _by_name(run.spans, "boss")
    assert persona_span.kind is SpanKind.PERSONA
    assert persona_span.status == "ok"
    md = persona_span.metadata
    assert md["persona"] == "boss"
    assert (md["llm_calls"], md["input_tokens"], md["output_tokens"]) == (2, 110, 3)
    assert md["cost_usd"] == 1.5
    assert _by_name(run.spans, "inner").metadata["persona"] == "boss"


@pytest.mark.parametrize(("boundary", "status"), [("fail", "failed"), ("continue", "skipped")])
def test_step_span_status_after_budget_exhaustion(boundary: str, status: str) -> None:
    @steptrace.step(budget={"max_tokens": 10}, error_boundary=boundary)
    def greedy() -> None:
        record_llm_usage("m", 8, 8)

    with steptrace.run() as run:
        if boundary == "fail":
            with pytest.raises(steptrace.BudgetExhausted):
                greedy()
        else:
            assert greedy() is None
    span = _by_name(run.spans, "greedy")
    assert span.metadata["status"] == status
    assert span.metadata["input_tokens"] == 8
    assert span.metadata["output_tokens"] == 8


def test_failing_step_span_is_error() -> None:
    @steptrace.step
    def broken() -> None:
        raise KeyError("nope")

    with steptrace.run() as run, pytest.raises(KeyError):
        broken()
    span = _by_name(run.spans, "broken")
    assert span.status == "error"
    assert span.error == "KeyError: 'nope'"
    assert span.metadata["status"] == "failed"


# -- the tree -----------------------------------------------------------------------


def test_parent_links_form_the_tree() -> None:
    @steptrace.step
    def leaf() -> None:
        pass

    @steptrace.step
    def nested() -> None:
        leaf()

    @steptrace.step
    def top() -> None:
        nested()
        with steptrace.span("fetch", kind=SpanKind.TOOL):
            leaf()

    @steptrace.persona
    def agent() -> None:
        top()

    with steptrace.run("root") as run:
        agent()
        with steptrace.span("user-block"):
            nested()
    assert _tree(run.spans) == [
        ("root", "run", None),
        ("agent", "persona", "root"),
        ("top", "step", "agent"),
        ("nested", "step", "top"),
        ("leaf", "step", "nested"),
        ("fetch", "tool", "top"),
        ("leaf", "step", "fetch"),
        ("user-block", "custom", "root"),
        ("nested", "step", "user-block"),
        ("leaf", "step", "nested"),
    ]
    assert all(s.status == "ok" for s in run.spans)
    # Ids are unique and parents start before their children.
    position = {s.span_id: i for i, s in enumerate(run.spans)}
    assert len(position) == len(run.spans)
    assert all(position[s.parent_id] < i for i, s in enumerate(run.spans) if s.parent_id)
    assert all(s.run_id == run.id for s in run.spans)


def test_span_yields_the_span_and_takes_metadata() -> None:
    with steptrace.run() as run, steptrace.span("retrieve", source="web") as opened:
        assert opened.kind is SpanKind.CUSTOM
        assert opened.status == "unset"
        assert opened.end_ns is None
        opened.set("hits", 3)
    assert opened in run.spans
    assert opened.metadata == {"source": "web", "hits": 3}
    assert opened.status == "ok"
    assert opened.duration_ms is not None
    assert opened.duration_ms >= 0
    assert opened.parent_id == _root(run).span_id
    assert opened.to_dict()["metadata"] == {"source": "web", "hits": 3}


def test_span_rejects_empty_name() -> None:
    with pytest.raises(ValueError, match="span"):
        steptrace.span("")


def test_async_span_and_async_steps() -> None:
    @steptrace.step
    async def fetch(n: int) -> int:
        async with steptrace.span("io", kind=SpanKind.TOOL) as io:
            await asyncio.sleep(0)
            io.set("n", n)
        return n

    @steptrace.persona
    async def crew() -> list[int]:
        return list(await asyncio.gather(fetch(1), fetch(2)))

    async def main() -> steptrace.Run:
        async with steptrace.run("async-root") as run:
            assert await crew() == [1, 2]
        return run

    run = asyncio.run(main())
    tree = _tree(run.spans)
    assert tree[:2] == [("async-root", "run", None), ("crew", "persona", "async-root")]
    assert sorted(tree[2:]) == [
        ("fetch", "step", "crew"),
        ("fetch", "step", "crew"),
        ("io", "tool", "fetch"),
        ("io", "tool", "fetch"),
    ]
    # Each io span hangs under its own fetch step, not a sibling's.
    for io in (s for s in run.spans if s.name == "io"):
        parent = next(s for s in run.spans if s.span_id == io.parent_id)
        assert parent.name == "fetch"
    assert sorted(s.metadata["n"] for s in run.spans if s.name == "io") == [1, 2]


def test_exception_in_span_marks_error_and_propagates() -> None:
    boom = RuntimeError("boom")
    with steptrace.run() as run:
        with pytest.raises(RuntimeError) as info, steptrace.span("risky"):
            raise boom
        # The context is restored: a new span is a child of the run again.
        with steptrace.span("after") as after:
            pass
    assert info.value is boom
    risky = _by_name(run.spans, "risky")
    assert risky.status == "error"
    assert risky.error == "RuntimeError: boom"
    assert after.parent_id == _root(run).span_id


def test_exception_in_async_span_marks_error_and_propagates() -> None:
    async def main() -> Span:
        async with steptrace.span("arisky") as opened:
            raise ValueError("bad")
        return opened  # pragma: no cover

    with pytest.raises(ValueError, match="bad"):
        asyncio.run(main())
    # asyncio.run worked in a copy of this context's default run.
    spans = steptrace.current_run().spans
    arisky = _by_name(spans, "arisky")
    assert (arisky.status, arisky.error) == ("error", "ValueError: bad")


# -- processors ---------------------------------------------------------------------


def test_collector_sees_start_and_end(collector: InMemorySpanCollector) -> None:
    @steptrace.step
    def work() -> None:
        with steptrace.span("inner"):
            pass

    with steptrace.run("col"):
        work()
    assert [s.name for s in collector.started] == ["col", "work", "inner"]
    assert [s.name for s in collector.spans] == ["inner", "work", "col"]
    assert all(s.end_ns is not None for s in collector.spans)
    assert _tree(collector.started) == [
        ("col", "run", None),
        ("work", "step", "col"),
        ("inner", "custom", "work"),
    ]
    collector.clear()
    assert collector.spans == []
    assert collector.started == []


def test_removed_processor_sees_nothing(collector: InMemorySpanCollector) -> None:
    steptrace.remove_span_processor(collector)
    steptrace.remove_span_processor(collector)  # unknown: ignored
    with steptrace.run(), steptrace.span("unseen"):
        pass
    assert collector.spans == []
    assert collector.started == []


class _Raising:
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Span) -> None:
        if self.where == "start" and span.name == "watched":
            raise RuntimeError("exporter down")

    def on_end(self, span: Span) -> None:
        if self.where == "end" and span.name == "watched":
            raise RuntimeError("exporter down")


@pytest.fixture
def raising(request: pytest.FixtureRequest) -> Iterator[_Raising]:
    processor = _Raising(request.param)
    steptrace.add_span_processor(processor)
    yield processor
    steptrace.remove_span_processor(processor)


@pytest.mark.parametrize("raising", ["start", "end"], indirect=True)
def test_raising_processor_is_logged_and_recorded(
    raising: _Raising, caplog: pytest.LogCaptureFixture, collector: InMemorySpanCollector
) -> None:
    steptrace.configure(strict=False)

    @steptrace.step(name="watched")
    def watched() -> int:
        return 7

    with caplog.at_level(logging.ERROR, logger="steptrace"), steptrace.run():
        assert watched() == 7
    span = _by_name(collector.spans, "watched")
    errors = span.metadata["steptrace.observer_errors"]
    assert len(errors) == 1
    assert f"on_{raising.where}" in errors[0]
    assert "RuntimeError: exporter down" in errors[0]
    assert span.metadata["status"] == "completed"
    records = [r for r in caplog.records if r.name == "steptrace"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert f"on_{raising.where}" in records[0].getMessage()
    # The processor registered after it still saw the span.
    assert span in collector.spans


@pytest.mark.parametrize("raising", ["start", "end"], indirect=True)
def test_raising_processor_raises_in_strict_mode(raising: _Raising) -> None:
    @steptrace.step(name="watched")
    def watched() -> int:
        return 7

    with steptrace.run(), pytest.raises(RuntimeError, match="exporter down"):
        watched()


@pytest.mark.parametrize(
    "bad",
    [object(), "processor", type("OnlyStart", (), {"on_start": lambda self, s: None})()],
)
def test_add_span_processor_rejects_non_processors(bad: object) -> None:
    with pytest.raises(TypeError, match="on_start"):
        steptrace.add_span_processor(bad)  # type: ignore[arg-type]


def test_collector_is_a_span_processor() -> None:
    assert isinstance(InMemorySpanCollector(), steptrace.SpanProcessor)
