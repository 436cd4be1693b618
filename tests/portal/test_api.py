"""The portal's JSON API and HTTP rules, through the ASGI callable, over the
demo agent run stored in a real SQLite file: every endpoint's answer against
what the store holds, paging, filters, sorting, errors, methods, static files
and the security headers on every response."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest

from steptrace.portal._security import CONTENT_SECURITY_POLICY
from steptrace.store import SQLiteStore

from .conftest import HOSTILE_RUN, IMG_PAYLOAD, SCRIPT_PAYLOAD, Demo, call

PAGES = ["/", f"/runs/{HOSTILE_RUN}", "/static/app.js", "/static/app.css", "/favicon.ico"]
ENDPOINTS = [
    "/api/runs",
    "/api/facets",
    "/api/aggregates?by=model",
    "/api/runs/{run}",
    "/api/runs/{run}/live",
    "/api/runs/{run}/summary",
    "/api/runs/{run}/events",
    "/api/runs/{run}/llm-calls",
]


def get(app: Any, target: str) -> Any:
    response = call(app, "GET", target)
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_runs_list_matches_the_store(app: Any, demo: Demo, demo_store: SQLiteStore) -> None:
    body = get(app, "/api/runs")
    stored = demo_store.list_runs()
    assert [r["id"] for r in body["runs"]] == [r.id for r in stored]  # newest first
    assert body["total"] == 3
    for shown, row in zip(body["runs"], stored, strict=True):
        assert (shown["name"], shown["status"], shown["started_at"], shown["ended_at"]) == (
            row.name,
            row.status,
            row.started_at,
            row.ended_at,
        )
        assert (shown["input_tokens"], shown["output_tokens"], shown["cost_usd"]) == (
            row.input_tokens,
            row.output_tokens,
            row.cost_usd,
        )
        assert shown["llm_calls"] == row.llm_calls
        assert row.duration_s is not None
        assert shown["duration_ms"] == round(row.duration_s * 1000, 3)
    by_id = {r["id"]: r for r in body["runs"]}
    assert by_id[demo.run_id]["personas"] == ["maintainer"]
    assert by_id[HOSTILE_RUN]["personas"] == ["attacker", "bystander"]
    # The demo's run is a child of `steptrace run`'s wrapper, whose usage holds it.
    assert by_id[demo.run_id]["parent_run_id"] is not None
    spent = [r for r in stored if r.parent_run_id is None]
    assert body["totals"] == {
        "runs": 3,
        "input_tokens": sum(r.input_tokens for r in spent),
        "output_tokens": sum(r.output_tokens for r in spent),
        "cost_usd": pytest.approx(sum(r.cost_usd for r in spent)),
        "llm_calls": sum(r.llm_calls for r in spent),
    }
    assert body["totals"]["llm_calls"] == 16
    assert body["totals"]["input_tokens"] == 12349 + 30


def test_runs_filters_totals_and_facets(app: Any, demo: Demo) -> None:
    failed = get(app, "/api/runs?status=failed")
    assert [r["id"] for r in failed["runs"]] == [HOSTILE_RUN]
    assert failed["totals"] == {
        "runs": 1,
        "input_tokens": 30,
        "output_tokens": 12,
        "cost_usd": 0.25,
        "llm_calls": 1,
    }
    assert failed["filters"] == {"name": None, "status": "failed", "persona": None}
    by_name = get(app, "/api/runs?name=agent-demo")
    assert [r["id"] for r in by_name["runs"]] == [demo.run_id]
    assert by_name["totals"]["llm_calls"] == 15
    # A persona that made no LLM call still finds its run.
    assert [r["id"] for r in get(app, "/api/runs?persona=bystander")["runs"]] == [HOSTILE_RUN]
    assert get(app, "/api/runs?persona=nobody")["runs"] == []
    assert get(app, "/api/runs?persona=nobody")["totals"]["runs"] == 0
    assert get(app, "/api/facets") == {
        "names": ["agent-demo", "agent_demo", "hostile"],
        "statuses": ["completed", "failed"],
        "personas": ["attacker", "bystander", "maintainer"],
    }


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("name", lambda r: r["name"]),
        ("status", lambda r: r["status"]),
        ("started", lambda r: r["started_at"]),
        ("duration", lambda r: r["duration_ms"]),
        ("tokens", lambda r: r["input_tokens"] + r["output_tokens"]),
        ("cost", lambda r: r["cost_usd"]),
    ],
)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_runs_sort_both_ways(app: Any, sort: str, key: Any, order: str) -> None:
    body = get(app, f"/api/runs?sort={sort}&order={order}")
    values = [key(r) for r in body["runs"]]
    assert values == sorted(values, reverse=order == "desc")
    assert (body["sort"], body["order"], body["total"]) == (sort, order, 3)


def test_runs_paging(app: Any) -> None:
    every = [r["id"] for r in get(app, "/api/runs?sort=name&order=asc")["runs"]]
    pages = [get(app, f"/api/runs?sort=name&order=asc&limit=2&offset={o}") for o in (0, 2, 4)]
    assert [[r["id"] for r in p["runs"]] for p in pages] == [every[:2], every[2:], []]
    assert [p["total"] for p in pages] == [3, 3, 3]


def test_aggregates_match_the_store(app: Any, demo_store: SQLiteStore) -> None:
    by: Literal["model", "persona", "step", "day"]
    for by in ("model", "persona", "step", "day"):
        body = get(app, f"/api/aggregates?by={by}")
        assert body["by"] == by
        assert body["rows"] == [
            {
                "key": a.key,
                "llm_calls": a.llm_calls,
                "input_tokens": a.input_tokens,
                "output_tokens": a.output_tokens,
                "cost_usd": a.cost_usd,
            }
            for a in demo_store.aggregate(by)
        ]
    models = {r["key"]: r["llm_calls"] for r in get(app, "/api/aggregates?by=model")["rows"]}
    assert models == {"gpt-4o-mini": 14, "gpt-4o": 1, "evil-model": 1}


def test_run_first_screen_matches_the_store(app: Any, demo: Demo, demo_store: SQLiteStore) -> None:
    body = get(app, f"/api/runs/{demo.run_id}")
    stored = demo_store.get_run(demo.run_id)
    assert stored is not None
    assert body["run"]["id"] == demo.run_id
    assert body["run"]["llm_calls"] == 15
    assert (body["run"]["input_tokens"], body["run"]["output_tokens"]) == (12349, 358)
    assert body["complete"] is True
    assert body["truncated"] is False
    assert body["span_count"] == len(stored.spans) == 34
    assert {s["id"] for s in body["spans"]} == {str(s.span_id) for s in stored.spans}
    origin = round(stored.run.started_at * 1e9)
    assert body["origin_ns"] == str(origin)
    for shown, span in zip(
        body["spans"], sorted(stored.spans, key=lambda s: s.start_ns), strict=True
    ):
        assert shown["id"] == str(span.span_id)
        assert shown["parent_id"] == (None if span.parent_id is None else str(span.parent_id))
        assert (shown["name"], shown["kind"], shown["status"]) == (
            span.name,
            span.kind,
            span.status,
        )
        assert shown["start_ms"] == round((span.start_ns - origin) / 1e6, 3)
    leaves = {s["name"]: s["leaf_count"] for s in body["spans"] if s["kind"] == "step"}
    assert leaves == {"review_workspace": 23, "draft_release_notes": 5, "write_headline": 1}
    assert [row["name"] for row in body["ledger"]] == [s.name for s in stored.completed_steps]
    assert body["steps"] == {"completed": 2, "failed": 0, "skipped": 1, "escalated": 0}
    assert body["event_counts"] == demo_store.event_counts(demo.run_id)
    assert body["event_total"] == 37


def test_summary_matches_the_stored_summary(app: Any, demo: Demo, demo_store: SQLiteStore) -> None:
    body = get(app, f"/api/runs/{demo.run_id}/summary")
    stored = demo_store.get_run(demo.run_id)
    assert stored is not None
    assert body["agent"]["llm_calls"] == 15
    assert body["agent"]["tool_executions"] == 14
    assert body["agent"]["tools_used"] == ["list_files", "search", "read_file", "write_file"]
    assert (body["input_tokens"], body["output_tokens"], body["llm_calls"]) == (12349, 358, 15)
    assert body["steps"] == {"completed": 2, "failed": 0, "skipped": 1, "escalated": 0}


def test_events_page_filter_and_after(app: Any, demo: Demo, demo_store: SQLiteStore) -> None:
    every = demo_store.events(demo.run_id, limit=1000)
    body = get(app, f"/api/runs/{demo.run_id}/events?limit=10&offset=5")
    assert [e["seq"] for e in body["events"]] == [e.seq for e in every[5:15]]
    assert [e["data"] for e in body["events"]] == [e.data for e in every[5:15]]
    assert body["last_seq"] == every[14].seq
    tools = get(app, f"/api/runs/{demo.run_id}/events?types=tool_execution,tool_rejected")
    assert {e["type"] for e in tools["events"]} == {"tool_execution", "tool_rejected"}
    assert len(tools["events"]) == 15
    after = get(app, f"/api/runs/{demo.run_id}/events?after={every[-3].seq}")
    assert [e["seq"] for e in after["events"]] == [every[-2].seq, every[-1].seq]
    assert after["offset"] is None
    end = get(app, f"/api/runs/{demo.run_id}/events?offset=1000")
    assert (end["events"], end["last_seq"]) == ([], None)


def test_llm_calls_and_one_call_with_its_transcript(
    app: Any, demo: Demo, demo_store: SQLiteStore
) -> None:
    page = get(app, f"/api/runs/{demo.run_id}/llm-calls?limit=4&offset=12")
    assert page["total"] == 15
    assert len(page["calls"]) == 3
    last = page["calls"][-1]
    assert (last["model"], last["input_tokens"], last["output_tokens"]) == ("gpt-4o", 93, 20)
    assert last["cost_usd"] == 0.0004325
    one = get(app, f"/api/runs/{demo.run_id}/llm-calls/{last['span_id']}")
    (transcript,) = demo_store.transcripts(demo.run_id, [int(last["span_id"])])
    assert one["transcript"] == {"request": transcript.request, "response": transcript.response}
    assert one["call"] == last
    hostile = get(app, f"/api/runs/{HOSTILE_RUN}/llm-calls")["calls"][0]
    assert hostile["span_id"] == "7000000000000004"  # beyond 2**53: a string, exact
    shown = get(app, f"/api/runs/{HOSTILE_RUN}/llm-calls/{hostile['span_id']}")
    assert shown["transcript"]["response"]["text"] == f"Here you go: {SCRIPT_PAYLOAD}"
    assert shown["transcript"]["request"]["messages"][2]["content"] == f"page says {IMG_PAYLOAD}"


def test_children_pages_leaf_spans(app: Any, demo: Demo, demo_store: SQLiteStore) -> None:
    stored = demo_store.get_run(demo.run_id)
    assert stored is not None
    step = next(s for s in stored.spans if s.name == "review_workspace")
    under = stored.children(step.span_id)
    body = get(app, f"/api/runs/{demo.run_id}/spans/{step.span_id}/children?limit=5&offset=20")
    assert body["total"] == len(under) == 23
    assert [s["id"] for s in body["spans"]] == [str(s.span_id) for s in under[20:25]]
    leaves = get(app, f"/api/runs/{demo.run_id}/spans/{step.span_id}/children?leaves=1")
    assert {s["kind"] for s in leaves["spans"]} == {"llm_call", "tool"}


def test_live_header_of_an_ended_run(app: Any, demo: Demo) -> None:
    body = get(app, f"/api/runs/{demo.run_id}/live")
    assert (body["run"]["status"], body["event_total"], body["span_count"]) == (
        "completed",
        37,
        34,
    )


@pytest.mark.parametrize(
    ("target", "status", "code", "words"),
    [
        ("/api/runs/nope", 404, "run_not_found", "no run 'nope' in this store"),
        ("/api/runs/nope/events", 404, "run_not_found", "'nope'"),
        ("/api/runs/nope/live", 404, "run_not_found", "'nope'"),
        ("/api/runs/nope/summary", 404, "run_not_found", "'nope'"),
        ("/api/runs/nope/llm-calls", 404, "run_not_found", "'nope'"),
        ("/api/nothing", 404, "no_such_endpoint", "no API endpoint /api/nothing; endpoints:"),
        ("/api/runs/{run}/llm-calls/1", 404, "llm_call_not_found", "no LLM call span 1"),
        ("/api/runs/{run}/spans/1/children", 404, "span_not_found", "has no span 1"),
        ("/api/runs/{run}/spans/x/children", 400, "bad_parameter", "span id"),
        ("/api/runs?limit=0", 400, "bad_parameter", "`limit` must be an integer from 1 to 500"),
        ("/api/runs?sort=colour", 400, "bad_parameter", "`sort` must be one of"),
        ("/api/runs?order=up", 400, "bad_parameter", "`order` must be one of asc, desc"),
        ("/api/aggregates", 400, "bad_parameter", "`by` is required"),
        ("/api/runs/{run}/events?types=bogus", 400, "bad_parameter", "'bogus'"),
        ("/api/runs/{run}/events?limit=1001", 400, "bad_parameter", "`limit`"),
    ],
)
def test_errors_are_json_naming_what_was_wrong(
    app: Any, demo: Demo, target: str, status: int, code: str, words: str
) -> None:
    response = call(app, "GET", target.replace("{run}", demo.run_id))
    assert response.status == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert words in body["message"]


def test_unknown_pages_are_404_text(app: Any) -> None:
    response = call(app, "GET", "/etc/passwd")
    assert response.status == 404
    assert response.body == b"404 nothing at /etc/passwd\n"
    assert call(app, "GET", "/static/../_app.py").status == 404
    assert call(app, "GET", "/static/%2e%2e%2f_api.py").status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head(app: Any, method: str) -> None:
    api = call(app, method, "/api/runs")
    assert api.status == 405
    assert api.headers["allow"] == "GET, HEAD"
    assert api.json()["error"] == "method_not_allowed"
    assert call(app, method, "/").status == 405


def test_head_has_the_headers_and_no_body(app: Any) -> None:
    got = call(app, "GET", "/api/runs")
    head = call(app, "HEAD", "/api/runs")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == str(len(got.body))
    page = call(app, "HEAD", "/static/app.js")
    assert (page.status, page.body) == (200, b"")
    assert page.headers["etag"] == call(app, "GET", "/static/app.js").headers["etag"]


@pytest.mark.parametrize("name", ["app.js", "app.css"])
def test_static_files_have_an_etag_and_answer_304(app: Any, name: str) -> None:
    first = call(app, "GET", f"/static/{name}")
    assert first.status == 200
    assert first.body
    etag = first.headers["etag"]
    again = call(app, "GET", f"/static/{name}", {"If-None-Match": etag})
    assert (again.status, again.body, again.headers["etag"]) == (304, b"", etag)
    stale = call(app, "GET", f"/static/{name}", {"If-None-Match": '"other"'})
    assert stale.status == 200


def test_the_page_is_one_html_file_with_no_inline_script(app: Any, demo: Demo) -> None:
    index = call(app, "GET", "/")
    run_page = call(app, "GET", f"/runs/{demo.run_id}")
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert run_page.body == index.body
    html = index.body.decode()
    assert '<script src="/static/app.js" defer></script>' in html
    assert "<script>" not in html
    assert "http" not in html.replace('"/static', "")


def test_every_response_carries_csp_and_nosniff(app: Any, demo: Demo) -> None:
    targets = list(PAGES) + [e.replace("{run}", demo.run_id) for e in ENDPOINTS]
    targets += ["/api/runs/nope", "/nothing", "/api/nothing"]
    responses = [call(app, "GET", t) for t in targets]
    responses += [call(app, "POST", "/api/runs"), call(app, "GET", "/", host="evil.example")]
    for response in responses:
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert "connect-src 'self'" in CONTENT_SECURITY_POLICY


def test_api_answers_are_not_cached_and_nan_is_null(tmp_path: Any) -> None:
    from steptrace.store import RunRow, WriteBatch

    from .conftest import portal

    store = SQLiteStore(tmp_path / "nan.db")
    try:
        store.write(
            WriteBatch(
                runs=[
                    RunRow(
                        id="nan-run",
                        name="n",
                        status="completed",
                        started_at=1.0,
                        ended_at=2.0,
                        metadata={"score": float("nan"), "big": float("inf")},
                    )
                ]
            )
        )
        with portal(store) as app:
            response = call(app, "GET", "/api/runs/nan-run")
            assert response.headers["cache-control"] == "no-store"
            assert json.loads(response.body)["run"]["metadata"] == {"score": None, "big": None}
    finally:
        store.close()


def test_child_runs_replays_and_write_errors_are_shown(tmp_path: Any) -> None:
    from steptrace.store import RunRow, WriteBatch

    from .conftest import portal

    def row(run_id: str, start: float, cost: float, **fields: Any) -> RunRow:
        return RunRow(
            id=run_id,
            name=run_id,
            status="completed",
            started_at=start,
            ended_at=start + 1,
            input_tokens=10,
            cost_usd=cost,
            llm_calls=1,
            **fields,
        )

    store = SQLiteStore(tmp_path / "family.db")
    try:
        store.write(
            WriteBatch(
                runs=[
                    row("parent", 1.0, 2.0),
                    row("child", 1.5, 1.5, parent_run_id="parent", parent_span_id=2**60),
                    row("replay", 3.0, 2.0, metadata={"replay_of": "parent"}),
                ],
                write_errors=[("child", 2, "span 7: OverflowError: int too large")],
            )
        )
        with portal(store) as app:
            body = get(app, "/api/runs")
            by_id = {r["id"]: r for r in body["runs"]}
            assert by_id["child"]["parent_run_id"] == "parent"
            assert by_id["child"]["parent_span_id"] == str(2**60)
            assert by_id["child"]["write_errors"] == 2
            assert by_id["child"]["write_error"] == "span 7: OverflowError: int too large"
            assert by_id["replay"]["replay_of"] == "parent"
            assert by_id["parent"]["parent_run_id"] is None
            # Spend: the parent's totals hold its child's; the replay spent nothing.
            assert body["totals"]["runs"] == 3
            assert body["totals"]["cost_usd"] == 2.0
            assert body["totals"]["llm_calls"] == 1
            assert get(app, "/api/runs?name=child")["totals"]["cost_usd"] == 1.5
            parent = get(app, "/api/runs/parent")
            assert [c["id"] for c in parent["child_runs"]] == ["child"]
            assert parent["parent"] is None
            child = get(app, "/api/runs/child")
            assert child["parent"] == {"id": "parent", "name": "parent"}
            assert child["child_runs"] == []
    finally:
        store.close()


def _unpriced_runs(store: SQLiteStore) -> tuple[str, str]:
    """A run whose calls are partly of unknown price, with a child run whose
    only call is: ``(parent id, child id)``."""
    import steptrace
    from steptrace.store import record_runs

    writer = record_runs(store)
    try:
        with steptrace.run("partly priced") as parent:
            steptrace.record_llm_usage("m-priced", 10, 10, cost_usd=0.15)
            steptrace.record_llm_usage("m-unknown", 10, 10)
            with steptrace.run("unpriced child") as child:
                steptrace.record_llm_usage("m-unknown", 10, 10)
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
    return parent.id, child.id


@pytest.mark.parametrize("route", ["/api/runs/{run}", "/api/runs/{run}/live"])
def test_a_run_header_says_how_many_calls_its_cost_leaves_out(tmp_path: Any, route: str) -> None:
    """A partial cost is never shown as if it were whole: the header carries
    ``unpriced_calls`` (its child runs' included, as its cost includes theirs),
    as ``steptrace show`` and ``steptrace runs`` say ``+ N unknown``."""
    from .conftest import portal

    with SQLiteStore(tmp_path / "runs.db") as store:
        parent_id, child_id = _unpriced_runs(store)
        with portal(store) as app:
            parent = get(app, route.replace("{run}", parent_id))["run"]
            child = get(app, route.replace("{run}", child_id))["run"]
            first = get(app, f"/api/runs/{parent_id}")
    assert (parent["cost_usd"], parent["unpriced_calls"]) == (0.15, 2)
    assert (child["cost_usd"], child["unpriced_calls"]) == (0, 1)
    assert [c["unpriced_calls"] for c in first["child_runs"]] == [1]
