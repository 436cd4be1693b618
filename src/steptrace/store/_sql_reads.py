"""The reads both SQL backends answer with the same queries: ``SQLReads``.

``SQLiteStore`` and ``PostgresStore`` inherit these methods of the
``RunStore`` protocol and give each only what differs between them: ``_read``
(run one ``?``-placeholder query, however the backend holds its connections),
``DAY`` (a call's UTC day as ``YYYY-MM-DD``) and ``BYTE_ORDER`` (what makes
text sort by its bytes: PostgreSQL's default collation does not). The reads
that need a backend's own features (``get_run``'s single snapshot,
``run_ids``'s literal prefix match) stay in the backends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ._protocol import Aggregate, AggregateKey, EventRow, RunFilter, RunRow, TranscriptRow
from ._queries import RUN_COLUMNS, aggregate_query, loads_or_none, run_filter_clause, run_row

__all__ = ["SQLReads"]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


class SQLReads:
    """Run listing, event pages, transcripts and aggregates in portable SQL."""

    DAY: str
    BYTE_ORDER: str = ""
    """Appended to a text column in ``ORDER BY`` to sort it by its bytes."""

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def list_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        persona: str | None = None,
        started_after: float | None = None,
        started_before: float | None = None,
        top_level: bool = False,
        parent_run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRow]:
        clause, params = run_filter_clause(
            RunFilter(
                name=name,
                status=status,
                persona=persona,
                started_after=started_after,
                started_before=started_before,
                top_level=top_level,
                parent_run_id=parent_run_id,
            )
        )
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM runs{clause} "
            f"ORDER BY started_at DESC, id{self.BYTE_ORDER} DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [run_row(row) for row in rows]

    def count_runs(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        persona: str | None = None,
        started_after: float | None = None,
        started_before: float | None = None,
        top_level: bool = False,
        parent_run_id: str | None = None,
    ) -> int:
        clause, params = run_filter_clause(
            RunFilter(
                name=name,
                status=status,
                persona=persona,
                started_after=started_after,
                started_before=started_before,
                top_level=top_level,
                parent_run_id=parent_run_id,
            )
        )
        return int(self._read(f"SELECT COUNT(*) FROM runs{clause}", params)[0][0])

    def events(
        self,
        run_id: str,
        *,
        types: Sequence[str] | None = None,
        after_seq: int = -1,
        limit: int = 1000,
    ) -> list[EventRow]:
        sql = "SELECT run_id, seq, span_id, data FROM events WHERE run_id = ? AND seq > ?"
        params: list[Any] = [run_id, after_seq]
        if types is not None:
            if not types:
                return []
            sql += f" AND type IN ({_marks(types)})"
            params.extend(types)
        rows = self._read(sql + " ORDER BY seq LIMIT ?", (*params, limit))
        return [EventRow(run_id=r[0], seq=r[1], span_id=r[2], data=json.loads(r[3])) for r in rows]

    def event_counts(self, run_id: str) -> dict[str, int]:
        rows = self._read(
            "SELECT type, COUNT(*) FROM events WHERE run_id = ? "
            f"GROUP BY type ORDER BY type{self.BYTE_ORDER}",
            (run_id,),
        )
        return {kind: int(count) for kind, count in rows}

    def transcripts(
        self, run_id: str, span_ids: Sequence[int] | None = None
    ) -> list[TranscriptRow]:
        sql = "SELECT run_id, span_id, request, response FROM transcripts WHERE run_id = ?"
        params: list[Any] = [run_id]
        if span_ids is not None:
            if not span_ids:
                return []
            sql += f" AND span_id IN ({_marks(span_ids)})"
            params.extend(span_ids)
        rows = self._read(sql + " ORDER BY span_id", params)
        return [
            TranscriptRow(
                run_id=r[0],
                span_id=r[1],
                request=loads_or_none(r[2]),
                response=loads_or_none(r[3]),
            )
            for r in rows
        ]

    def aggregate(
        self,
        by: AggregateKey,
        *,
        run_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Aggregate]:
        sql, params = aggregate_query(
            by, day_expression=self.DAY, run_id=run_id, since=since, until=until
        )
        # int()/float(): PostgreSQL sums BIGINT as NUMERIC (a Decimal).
        return [
            Aggregate(key, int(calls), int(inp), int(out), float(cost), int(unpriced))
            for key, calls, inp, out, cost, unpriced in self._read(sql, params)
        ]
