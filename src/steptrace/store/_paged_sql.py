"""The paged reads in SQL, for both store backends: ``SQLPagedReads``.

Same answers as ``LoadedReads`` (a test holds them equal), without loading a
whole run: the header, the structure, a page of spans or events, the agent
summary (aggregated in SQL from the events' JSON) each take one or a few
indexed queries, so a run of 100,000 events opens in milliseconds. What the
``RunStore`` protocol already answers quickly (event counts, transcripts,
aggregates) goes through the store. The queries are written with ``?``
placeholders in SQL both databases accept; a subclass gives how to run one
(``_rows``), how to read a number or text field of an event's JSON, and a
read snapshot: ``SQLitePagedReads`` (``_paged_sqlite``) and
``PostgresPagedReads`` (``_paged_postgres``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

from .._run import CompletedStep
from ..events import Tally, rolled_up
from . import _search
from ._loaded_reads import LoadedReads
from ._paged import (
    INLINE_SPAN_LIMIT,
    STRUCTURE_LIMIT,
    RunFilters,
    RunStructure,
    RunTotals,
    SortKey,
)
from ._protocol import EventRow, RunFilter, RunRow, SpanRow
from ._queries import RUN_COLUMNS, SPAN_COLUMNS, run_filter_clause, run_row, span_row

__all__ = ["SQLPagedReads"]

_ORDER = {
    "started": "started_at",
    "name": "name",
    "status": "status",
    "duration": "(ended_at - started_at)",
    "tokens": "(input_tokens + output_tokens)",
    "cost": "cost_usd",
}
_LEAVES = "('llm_call', 'tool')"


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class SQLPagedReads(LoadedReads):
    """``PagedReads`` answered with SQL over the store's tables (what is not
    overridden here, ``LoadedReads`` asks of the store's own methods)."""

    FIND = "instr"
    """The function giving where a text is in another (``_search.sql_rows``)."""
    JSON_UNREADABLE: str | None = None
    """SQL true for an event whose JSON the database's JSON functions cannot
    read (``None``: they read all): ``agent_summary`` reads those in Python."""

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one ``?``-placeholder query."""
        raise NotImplementedError

    def _json_int(self, field: str) -> str:
        """SQL for the integer ``field`` of an event's ``data``."""
        raise NotImplementedError

    def _json_text(self, field: str) -> str:
        """SQL for the ``field`` of an event's ``data`` as JSON text (decoded
        here: a string in SQL would lose what a database's text cannot hold)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Queries inside see one commit (where the backend can give that)."""
        yield

    # -- runs -------------------------------------------------------------------------

    @staticmethod
    def _where(filters: RunFilters) -> tuple[str, list[Any]]:
        return run_filter_clause(
            RunFilter(name=filters.name, status=filters.status, persona=filters.persona)
        )

    def runs_page(
        self, filters: RunFilters, sort: SortKey, descending: bool, limit: int, offset: int
    ) -> tuple[list[RunRow], int]:
        clause, params = self._where(filters)
        direction = "DESC" if descending else "ASC"
        rows = self._rows(
            f"SELECT {RUN_COLUMNS} FROM runs{clause} ORDER BY {_ORDER[sort]} {direction} "
            "NULLS LAST, started_at DESC, id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        total = self._rows(f"SELECT COUNT(*) FROM runs{clause}", params)[0][0]
        return [run_row(row) for row in rows], int(total)

    def totals(self, filters: RunFilters) -> RunTotals:
        clause, params = self._where(filters)
        # Spend counts each call once: not a child whose parent matches too (the
        # parent's totals hold it), not a replay (its calls are the original's).
        spent = (
            "replay_of IS NULL AND (parent_run_id IS NULL OR parent_run_id NOT IN "
            f"(SELECT id FROM runs{clause}))"
        )
        only = f"{clause} AND {spent}" if clause else f" WHERE {spent}"
        (runs,) = self._rows(f"SELECT COUNT(*) FROM runs{clause}", params)[0]
        inp, out, cost, calls = self._rows(
            "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            f"COALESCE(SUM(cost_usd), 0), COALESCE(SUM(llm_calls), 0) FROM runs{only}",
            [*params, *params],
        )[0]
        return RunTotals(int(runs), int(inp), int(out), float(cost), int(calls))

    def personas(self, run_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each run's personas (every persona span, not only those that called a
        model), in the order they started."""
        found: dict[str, list[str]] = {run_id: [] for run_id in run_ids}
        if not run_ids:
            return found
        # Spans that start together go by id (as a run's spans are ordered):
        # each persona is placed by its first span in that order.
        rows = self._rows(
            "SELECT run_id, name FROM (SELECT run_id, name, ROW_NUMBER() OVER "
            "(PARTITION BY run_id ORDER BY start_ns, span_id) AS n FROM spans "
            f"WHERE kind = 'persona' AND run_id IN ({_marks(len(run_ids))})) AS p "
            "GROUP BY run_id, name ORDER BY run_id, MIN(n)",
            list(run_ids),
        )
        for run_id, name in rows:
            found[run_id].append(name)
        return found

    def facets(self) -> dict[str, list[str]]:
        names = self._rows("SELECT DISTINCT name FROM runs ORDER BY name")
        statuses = self._rows("SELECT DISTINCT status FROM runs ORDER BY status")
        personas = self._rows(
            "SELECT DISTINCT name FROM spans WHERE kind = 'persona' ORDER BY name"
        )
        return {
            "names": [n for (n,) in names],
            "statuses": [s for (s,) in statuses],
            "personas": [p for (p,) in personas],
        }

    # -- one run ----------------------------------------------------------------------

    def header(self, run_id: str) -> RunRow | None:
        rows = self._rows(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return run_row(rows[0]) if rows else None

    def live_header(self, run_id: str) -> RunRow | None:
        return self.header(run_id)

    def span_count(self, run_id: str) -> int:
        return int(self._rows("SELECT COUNT(*) FROM spans WHERE run_id = ?", (run_id,))[0][0])

    def structure(self, run_id: str) -> RunStructure | None:
        with self._snapshot():
            head = self.header(run_id)
            if head is None:
                return None
            count = self.span_count(run_id)
            leaf_counts = {
                int(parent): int(n)
                for parent, n in self._rows(
                    "SELECT parent_id, COUNT(*) FROM spans WHERE run_id = ? "
                    f"AND kind IN {_LEAVES} AND parent_id IS NOT NULL GROUP BY parent_id",
                    (run_id,),
                )
            }
            if count <= INLINE_SPAN_LIMIT:
                rows = self._rows(
                    f"SELECT {SPAN_COLUMNS} FROM spans WHERE run_id = ? ORDER BY start_ns, span_id",
                    (run_id,),
                )
                spans = [span_row(r) for r in rows]
                return RunStructure(spans, leaf_counts, count, True)
            rows = self._rows(
                f"SELECT {SPAN_COLUMNS} FROM spans WHERE run_id = ? AND kind NOT IN {_LEAVES} "
                "ORDER BY start_ns, span_id LIMIT ?",
                (run_id, STRUCTURE_LIMIT + 1),
            )
            truncated = len(rows) > STRUCTURE_LIMIT
            spans = [span_row(r) for r in rows[:STRUCTURE_LIMIT]]
            spans += self._missing_ancestors(run_id, spans)
            spans.sort(key=lambda s: (s.start_ns, s.span_id))
        return RunStructure(spans, leaf_counts, count, False, truncated)

    def _missing_ancestors(self, run_id: str, spans: list[SpanRow]) -> list[SpanRow]:
        """The leaf spans a structural span sits under (a step inside a tool)."""
        known = {s.span_id for s in spans}
        found: list[SpanRow] = []
        wanted = {s.parent_id for s in spans if s.parent_id is not None} - known
        while wanted:
            ids = sorted(wanted)[:500]
            rows = [
                span_row(r)
                for r in self._rows(
                    f"SELECT {SPAN_COLUMNS} FROM spans WHERE run_id = ? "
                    f"AND span_id IN ({_marks(len(ids))})",
                    (run_id, *ids),
                )
            ]
            known.update(ids)
            found.extend(rows)
            wanted = (wanted | {s.parent_id for s in rows if s.parent_id is not None}) - known
        return found

    def children(
        self, run_id: str, parent_id: int, offset: int, limit: int, *, leaves_only: bool = False
    ) -> tuple[list[SpanRow], int]:
        where = "run_id = ? AND parent_id = ?" + (f" AND kind IN {_LEAVES}" if leaves_only else "")
        rows = self._rows(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE {where} "
            "ORDER BY start_ns, span_id LIMIT ? OFFSET ?",
            (run_id, parent_id, limit, offset),
        )
        total = self._rows(f"SELECT COUNT(*) FROM spans WHERE {where}", (run_id, parent_id))[0][0]
        return [span_row(r) for r in rows], int(total)

    def span(self, run_id: str, span_id: int) -> SpanRow | None:
        rows = self._rows(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE run_id = ? AND span_id = ?",
            (run_id, span_id),
        )
        return span_row(rows[0]) if rows else None

    def ledger(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT data FROM completed_steps WHERE run_id = ? ORDER BY seq", (run_id,)
        )
        # Through CompletedStep, so rows stored before a field was added read
        # as the fallback reads them (with the field's default).
        return [CompletedStep.from_dict(json.loads(data)).to_dict() for (data,) in rows]

    def llm_spans(self, run_id: str, offset: int, limit: int) -> tuple[list[SpanRow], int]:
        rows = self._rows(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE run_id = ? AND kind = 'llm_call' "
            "ORDER BY start_ns, span_id LIMIT ? OFFSET ?",
            (run_id, limit, offset),
        )
        total = self._rows(
            "SELECT COUNT(*) FROM spans WHERE run_id = ? AND kind = 'llm_call'", (run_id,)
        )[0][0]
        return [span_row(r) for r in rows], int(total)

    def events_page(
        self, run_id: str, types: Sequence[str] | None, offset: int, limit: int
    ) -> list[EventRow]:
        sql = "SELECT run_id, seq, span_id, data FROM events WHERE run_id = ?"
        params: list[Any] = [run_id]
        if types is not None:
            if not types:
                return []
            sql += f" AND type IN ({_marks(len(types))})"
            params.extend(types)
        rows = self._rows(sql + " ORDER BY seq LIMIT ? OFFSET ?", (*params, limit, offset))
        return [EventRow(run_id=r[0], seq=r[1], span_id=r[2], data=json.loads(r[3])) for r in rows]

    def event_at(self, run_id: str, seq: int) -> tuple[EventRow, int] | None:
        rows = self._rows(
            "SELECT run_id, seq, span_id, data FROM events WHERE run_id = ? AND seq = ?",
            (run_id, seq),
        )
        if not rows:
            return None
        r = rows[0]
        before = self._rows(
            "SELECT COUNT(*) FROM events WHERE run_id = ? AND seq < ?", (run_id, seq)
        )[0][0]
        return EventRow(run_id=r[0], seq=r[1], span_id=r[2], data=json.loads(r[3])), int(before)

    def search(self, run_id: str, needle: str, limit: int) -> tuple[list[_search.SearchHit], bool]:
        with self._snapshot():
            rows = _search.sql_rows(self._rows, run_id, needle, limit, self.FIND)
        found = _search.hits(rows, needle, limit)
        return found, rows.full or len(found) >= limit

    def agent_summary(self, run_id: str) -> dict[str, Any] | None:
        """``summarize_events``'s dict, aggregated in SQL: the run's
        ``loop_complete`` seqs bound the loops (a loop's events come after the
        previous one's end, up to its own), and each kind of event is counted
        per loop by a range join on ``seq``, reading only the events of that
        kind through the (run, type, seq) index."""
        if self.header(run_id) is None:
            return None
        bounds = (
            "WITH b AS (SELECT lo, LEAD(lo) OVER (ORDER BY lo) AS hi, "
            "ROW_NUMBER() OVER (ORDER BY lo) - 1 AS lp FROM (SELECT -1 AS lo UNION ALL "
            "SELECT seq FROM events WHERE run_id = ? AND type = 'loop_complete') AS ends) "
        )
        within = "e.run_id = ? AND e.seq > b.lo AND (b.hi IS NULL OR e.seq <= b.hi)"
        unreadable = self.JSON_UNREADABLE
        readable = "" if unreadable is None else f" AND NOT {unreadable}"
        kinds = [k for k in _COUNTED if k != "tool_execution"] + ["phase_change", "loop_complete"]
        counted = ", ".join(f"'{kind}'" for kind in kinds)
        cells: list[tuple[Any, ...]] = [
            (lp, kind, 0, n, 0, 0, 0)
            for lp, kind, n in self._rows(
                bounds + "SELECT b.lp, e.type, COUNT(*) FROM b JOIN events e ON "
                f"{within} AND e.type IN ({counted}) GROUP BY b.lp, e.type",
                (run_id, run_id),
            )
        ]
        cells += self._rows(
            bounds + "SELECT b.lp, 'llm_call', CASE WHEN "
            f"{self._json_int('iteration')} = 0 THEN 1 ELSE 0 END AS solo, COUNT(*), "
            f"COALESCE(SUM({self._json_int('input_tokens')}), 0), "
            f"COALESCE(SUM({self._json_int('output_tokens')}), 0), "
            f"COALESCE(SUM({self._json_int('duration_ms')}), 0) "
            f"FROM b JOIN events e ON {within} AND e.type = 'llm_call'{readable} "
            "GROUP BY b.lp, solo",
            (run_id, run_id),
        )
        tools = [
            (lp, _json_value(tool), *counts)
            for lp, tool, *counts in self._rows(
                bounds + f"SELECT b.lp, {self._json_text('tool_name')} AS tool, MIN(e.seq), "
                f"COUNT(*), COALESCE(SUM({self._json_int('duration_ms')}), 0) "
                f"FROM b JOIN events e ON {within} AND e.type = 'tool_execution'{readable} "
                "GROUP BY b.lp, tool",
                (run_id, run_id),
            )
        ]
        if self.JSON_UNREADABLE is not None:
            self._add_unreadable(bounds, within, run_id, cells, tools)
        tools.sort(key=itemgetter(2))  # in first-use order
        cells += [(lp, "tool_execution", 0, n, 0, 0, ms) for lp, _, _, n, ms in tools]
        completes = [
            json.loads(data)
            for (data,) in self._rows(
                "SELECT data FROM events WHERE run_id = ? AND type = 'loop_complete' ORDER BY seq",
                (run_id,),
            )
        ]
        firsts = [(lp, tool, first) for lp, tool, first, _, _ in tools]
        return _agent_summary(cells, firsts, completes)

    def _add_unreadable(
        self,
        bounds: str,
        within: str,
        run_id: str,
        cells: list[tuple[Any, ...]],
        tools: list[tuple[Any, ...]],
    ) -> None:
        """Add the calls and tool uses the database's JSON functions cannot
        read (``JSON_UNREADABLE``) to ``cells`` and ``tools``, read here: as
        the SQL adds them up, one row a call or tool use."""
        rows = self._rows(
            bounds + f"SELECT b.lp, e.seq, e.data FROM b JOIN events e ON {within} "
            f"AND e.type IN ('llm_call', 'tool_execution') AND {self.JSON_UNREADABLE}",
            (run_id, run_id),
        )
        for lp, seq, text in rows:
            data = json.loads(text)
            if data.get("type") == "llm_call":
                solo = 1 if data.get("iteration") == 0 else 0
                figures = (_int(data, k) for k in ("input_tokens", "output_tokens", "duration_ms"))
                cells.append((lp, "llm_call", solo, 1, *figures))
            else:
                tools.append((lp, data.get("tool_name"), seq, 1, _int(data, "duration_ms")))


def _json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _int(data: dict[str, Any], key: str) -> int:
    """An event's count as the SQL sums it (a missing one is no count)."""
    value = data.get(key)
    return value if type(value) is int else 0


_COUNTED = ("tool_execution", "tool_rejected", "loop_intervention", "context_compaction")


def _agent_summary(
    cells: list[tuple[Any, ...]], tools: list[tuple[Any, ...]], completes: list[dict[str, Any]]
) -> dict[str, Any]:
    """``summarize_events``'s dict from the grouped counts, by its own
    tallies and roll-up (``Tally``, ``rolled_up``)."""
    total, outside = Tally(), Tally()
    loops: dict[int, Tally] = {}
    for lp, kind, solo, count, inp, out, ms in cells:
        targets = (total, outside) if solo else (total, loops.setdefault(int(lp), Tally()))
        for tally in targets:
            tally.add(kind, int(count), int(inp), int(out), int(ms))
    for lp, tool, _ in tools:
        loops[int(lp)].tools_used.setdefault(tool)
        total.tools_used.setdefault(tool)
    for lp, complete in enumerate(completes):
        loops.setdefault(lp, Tally()).complete(
            complete.get("status", "unknown"),
            complete.get("iterations", 0),
            complete.get("total_duration_ms", 0),
        )
    return rolled_up(total, outside, [loops[lp] for lp in sorted(loops)])
