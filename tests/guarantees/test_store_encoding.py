"""The writer's fast encoding stores exactly what the reference rows store.

One run is recorded by two writers at once: one into a ``SQLiteStore`` (rows
encoded straight from the run's objects, ``_encode.add_encoded``), one into a
``SQLiteStore`` subclass that rewrites ``write`` (so the writer hands it row
objects, ``add_rows``, encoded by ``_queries.batch_rows``). Every table must
hold the same rows, byte for byte, whatever text, numbers and metadata the
run carried, including values a store refuses."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace import LlmCall, ToolExecution
from steptrace.store import SQLiteStore, StoreWriter, WriteBatch
from steptrace.store._encode import encodes


class _RowStore(SQLiteStore):
    """A SQLite store the writer must treat as any other ``RunStore``."""

    def write(self, batch: WriteBatch) -> None:
        assert type(batch) is WriteBatch
        super().write(batch)


_TABLES = {
    "runs": "id, name, status, error, metadata, budget, input_tokens, output_tokens, "
    "cost_usd, llm_calls, parent_run_id, parent_span_id, write_errors",
    "spans": "*",
    "events": "*",
    "completed_steps": "*",
    "llm_calls": "*",
    "transcripts": "*",
}


def _tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: sorted(conn.execute(f"SELECT {columns} FROM {table}").fetchall(), key=repr)
            for table, columns in _TABLES.items()
        }
    finally:
        conn.close()


class _Odd:
    def __str__(self) -> str:
        return "odd \u00e9"


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.text(max_size=12), min_size=1, max_size=4),
    tokens=st.lists(st.integers(0, 2**70), min_size=1, max_size=4),
    metadata=st.dictionaries(st.text(max_size=6), _values, max_size=3),
    estimated=st.booleans(),
)
def test_fast_rows_equal_reference_rows(
    tmp_path: Path, texts: list[str], tokens: list[int], metadata: dict[str, Any], estimated: bool
) -> None:
    fast_path = tmp_path / f"fast-{len(list(tmp_path.iterdir()))}.db"
    rows_path = fast_path.with_name(fast_path.name.replace("fast", "rows"))
    fast = StoreWriter(SQLiteStore(fast_path))
    rows = StoreWriter(_RowStore(rows_path))
    assert encodes(fast.store)
    assert not encodes(rows.store)
    circular: dict[str, Any] = {}
    circular["self"] = circular

    @steptrace.step(model="m", budget={"max_usd": 1e6})
    def work(n: int, text: str) -> None:
        usage = min(tokens[n % len(tokens)], 10**12)
        steptrace.record_llm_usage(text or "m", usage, 1, cost_usd=0.001)
        steptrace.emit_event(
            LlmCall(
                call_id=text,
                model="m",
                input_tokens=tokens[n % len(tokens)],
                output_tokens=n,
                cache_tokens=0,
                duration_ms=3,
                iteration=n,
                estimated=estimated,
            )
        )

    @steptrace.persona("p\u00e9", budget={"max_usd": 1e6})
    def persona(n: int, text: str) -> None:
        work(n, text)

    steptrace.add_span_processor(fast)
    steptrace.add_span_processor(rows)
    try:
        with steptrace.run("enc", metadata={"m": _Odd()}) as run:
            for n, text in enumerate(texts):
                persona(n, text)
                with steptrace.span(text or "s") as span:
                    span.metadata.update(metadata)
                    span.set("odd", _Odd())
                    steptrace.emit_event(
                        ToolExecution(
                            tool_name=text,
                            tool_use_id=str(n),
                            duration_ms=n,
                            status="ok",
                            classification="other",
                            iteration=n,
                        )
                    )
            assert fast.flush()
            assert rows.flush()
            steptrace.take_agent_trace()  # both read on from the fresh list
            with steptrace.span("circular") as span:
                span.set("loop", circular)  # refused by both, the rest stored
            work(len(texts), "after the take")
    finally:
        steptrace.remove_span_processor(fast)
        steptrace.remove_span_processor(rows)
        fast.stop()
        rows.stop()
    assert fast.failures == rows.failures > 0
    stored = _tables(fast_path)
    assert stored == _tables(rows_path)
    assert len(stored["events"]) == 2 * len(texts) + 1
    assert run.id in {row[0] for row in stored["runs"]}
