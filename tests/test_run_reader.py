"""``RunReader``: each record read once, in one lock acquisition, never lost to
retention, and a ``take_*`` swap started over on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import steptrace
from steptrace import LlmCall
from steptrace._run_reader import RunReader


def _event(n: int) -> LlmCall:
    return LlmCall(
        call_id=str(n),
        model="m",
        input_tokens=n,
        output_tokens=0,
        cache_tokens=0,
        duration_ms=0,
        iteration=n,
    )


@steptrace.step
def _work(n: int) -> None:
    steptrace.record_llm_usage("m", n, 1, cost_usd=0.0)
    steptrace.emit_event(_event(n))


def test_events_are_read_once_and_a_take_starts_over() -> None:
    with steptrace.run() as run:
        reader = RunReader(run, steps=False, trace=False)
        assert reader.read().events == []
        steptrace.emit_event(_event(1))
        steptrace.emit_event(_event(2))
        news = reader.read()
        assert news.events == [_event(1), _event(2)]
        assert news.event_span_ids == [run.root.span_id] * 2
        assert reader.read().events == []
        steptrace.take_agent_trace()
        steptrace.emit_event(_event(3))
        assert reader.read().events == [_event(3)]
        run.events.append(_event(4))  # as emit_event does before the span id
        assert reader.read().events == []  # an unpaired entry waits for its span id
        run.event_span_ids.append(run.root.span_id)
        assert reader.read().events == [_event(4)]


def test_one_read_returns_steps_events_and_calls_with_absolute_positions() -> None:
    with steptrace.run() as run:
        reader = RunReader(run)
        for n in range(3):
            _work(n)
        news = reader.read()
        assert news.steps_at == 0
        assert [frame.span_id for frame in news.steps] == [s.span_id for s in run.ended_steps]
        assert news.events == [_event(0), _event(1), _event(2)]
        assert [entry[1] for entry in news.trace] == [0, 1, 2]
        _work(3)
        news = reader.read()
        assert news.steps_at == 3
        assert len(news.steps) == len(news.events) == len(news.trace) == 1


def test_retention_keeps_what_a_reader_has_not_read_and_drops_what_none_reads() -> None:
    with steptrace.run(retain=10) as run:
        steps = RunReader(run, events=False, trace=False)
        seen = 0
        for n in range(100):
            _work(n)
            if n % 7 == 0:
                news = steps.read()
                assert news.steps_at == seen  # nothing skipped, nothing repeated
                seen += len(news.steps)
        # Events and calls nobody reads were trimmed; steps only once read.
        assert run.dropped["events"] > 0
        assert run.dropped["llm_calls"] > 0
        assert run.steps_base <= seen
        seen += len(steps.read().steps)
        assert seen == 100
        assert steps.lost == 0


_RECORDED_AND_DROPPED = """
import gc, sys, weakref
import steptrace
from steptrace.store import record_runs

writer = record_runs(sys.argv[1])
with steptrace.run("short-lived") as run:
    steptrace.emit_event(
        steptrace.LoopComplete(status="done", iterations=1, total_duration_ms=0))
assert writer.flush()
gone = weakref.ref(run)
del run
gc.collect()
print("collected" if gone() is None else "kept")
"""


def test_an_ended_run_recorded_by_a_writer_is_not_kept_alive(tmp_path: Path) -> None:
    # In a fresh interpreter: the tests' own fixtures keep spans of their own.
    result = subprocess.run(
        [sys.executable, "-c", _RECORDED_AND_DROPPED, str(tmp_path / "runs.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == ["collected"]  # the writer's reader held it weakly
