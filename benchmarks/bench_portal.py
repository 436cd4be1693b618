"""Portal benchmark: a 100,000-event run's first screen and scrolling, in Chromium.

Run ``python benchmarks/bench_portal.py`` (``--quick`` for a smoke run). It
writes a synthetic stored run into a temporary SQLite file with
``store.write(WriteBatch(...))``: 100,000 agent events of every type, 1,000
steps under one persona with two LLM calls and two tools each (5,002 spans) and
the steps' ledger rows. It serves the portal on a free 127.0.0.1 port in a
thread (uvicorn, as ``steptrace portal`` does) and opens the run's page in
Debian's Chromium (``/usr/bin/chromium``, headless). Rows:

- first screen: navigation start to the step tree and the first event rows on
  the page, measured in the browser (the page records ``performance.now()``
  when both are drawn); median of several fresh page loads.
- API: the calls that first screen makes (the run, the first events page, the
  LLM calls page, the summary), each request's duration from the browser's
  resource timing, median over the same loads.
- scroll: time from setting the event list's scroll position to the rows
  there being drawn: the next page of events (200 rows on), ten times in a
  row, and a jump to the middle of the run (event 50,000).
- search: ``GET /api/runs/{id}/search`` timed from Python over loopback, for
  a word found in one call only (``rare``: every prompt, response and event is
  read) and for one in every prompt (``common``: the query stops at its
  limit); and in the browser, from pressing Enter in the search box to the
  matches drawn. Each LLM call stores a transcript (about 2 KB of prompt and a
  tool-call response), as a run recorded with content does.

Baseline in the same run: the same page for a run of 100 events (10 steps);
ratios are big run / small run. Target (issue 6): the first screen in under 1.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _machine import load_average, revision
from steptrace.portal import create_app
from steptrace.store import (
    EventRow,
    RunRow,
    SpanRow,
    SQLiteStore,
    StepRow,
    TranscriptRow,
    WriteBatch,
)

CHROMIUM = Path("/usr/bin/chromium")
TARGET_FIRST_SCREEN_S = 1.5
ROW_HEIGHT = 26  # the event list's row height in app.js
EVENT_PAGE = 200

_EVENT_KINDS: list[dict[str, Any]] = [
    {
        "type": "llm_call",
        "call_id": "c",
        "model": "gpt-4o-mini",
        "input_tokens": 120,
        "output_tokens": 30,
        "cache_tokens": 0,
        "duration_ms": 800,
        "iteration": 1,
    },
    {
        "type": "tool_execution",
        "tool_name": "read_file",
        "tool_use_id": "u",
        "duration_ms": 4,
        "status": "ok",
        "classification": "read_only",
        "iteration": 1,
    },
    {
        "type": "llm_call",
        "call_id": "d",
        "model": "gpt-4o-mini",
        "input_tokens": 140,
        "output_tokens": 20,
        "cache_tokens": 0,
        "duration_ms": 700,
        "iteration": 2,
    },
    {
        "type": "tool_execution",
        "tool_name": "search",
        "tool_use_id": "v",
        "duration_ms": 6,
        "status": "ok",
        "classification": "read_only",
        "iteration": 2,
    },
    {
        "type": "tool_rejected",
        "tool_name": "write_file",
        "reason": "read-only phase",
        "iteration": 2,
    },
    {
        "type": "loop_intervention",
        "tool_name": "search",
        "kind": "warn",
        "count": 2,
        "iteration": 3,
    },
    {"type": "phase_change", "from_phase": "plan", "to_phase": "act", "iteration": 3},
    {"type": "context_compaction", "archived_messages": 12, "new_summary_len": 900, "iteration": 3},
]


def synthetic_run(run_id: str, *, events: int, steps: int, start: float) -> WriteBatch:
    """One ended run: ``steps`` budgeted steps (each two LLM calls and two
    tools) under a persona, ``events`` events spread over the steps."""
    ns = int(start * 1e9)
    step_ns = 10_000_000
    run_span, persona = 1, 2
    end = ns + steps * step_ns + 2
    spans = [
        SpanRow(
            run_id=run_id,
            span_id=run_span,
            parent_id=None,
            name="big-agent",
            kind="run",
            start_ns=ns,
            end_ns=end,
            status="ok",
            error=None,
            metadata={"status": "completed"},
        ),
        SpanRow(
            run_id=run_id,
            span_id=persona,
            parent_id=run_span,
            name="researcher",
            kind="persona",
            start_ns=ns + 1,
            end_ns=end - 1,
            status="ok",
            error=None,
            metadata={"status": "completed"},
            context={"max_usd": 50.0},
        ),
    ]
    ledger: list[StepRow] = []
    transcripts: list[TranscriptRow] = []
    next_id = 3
    for s in range(steps):
        at = ns + 2 + s * step_ns
        step_id = next_id
        next_id += 1
        spans.append(
            SpanRow(
                run_id=run_id,
                span_id=step_id,
                parent_id=persona,
                name=f"task-{s}",
                kind="step",
                start_ns=at,
                end_ns=at + step_ns - 10,
                status="ok",
                error=None,
                metadata={
                    "status": "completed",
                    "input_tokens": 260,
                    "output_tokens": 50,
                    "cost_usd": 0.00007,
                },
                context={"max_tokens": 2000, "persona": "researcher"},
            )
        )
        for c in range(4):
            kind = "llm_call" if c % 2 == 0 else "tool"
            meta: dict[str, Any] = (
                {
                    "gen_ai.response.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 130,
                    "gen_ai.usage.output_tokens": 25,
                    "steptrace.cost_usd": 0.000035,
                }
                if kind == "llm_call"
                else {}
            )
            spans.append(
                SpanRow(
                    run_id=run_id,
                    span_id=next_id,
                    parent_id=step_id,
                    name=("chat gpt-4o-mini" if kind == "llm_call" else "tool read_file"),
                    kind=kind,
                    start_ns=at + 1 + c * 2_000_000,
                    end_ns=at + (c + 1) * 2_000_000,
                    status="ok",
                    error=None,
                    metadata=meta,
                )
            )
            if kind == "llm_call":
                transcripts.append(_transcript(run_id, next_id, s, c, steps))
            next_id += 1
        ledger.append(
            StepRow(
                run_id=run_id,
                seq=s,
                data={
                    "name": f"task-{s}",
                    "function": "task",
                    "model": "gpt-4o-mini",
                    "input_tokens": 260,
                    "output_tokens": 50,
                    "cost_usd": 0.00007,
                    "llm_calls": 2,
                    "status": "completed",
                    "error": None,
                    "persona": "researcher",
                    "span_id": step_id,
                    "parent_span_id": persona,
                    "started_ns": at,
                    "ended_ns": at + step_ns - 10,
                    "max_tokens": 2000,
                    "max_usd": None,
                },
            )
        )
    step_ids = [sp.span_id for sp in spans if sp.kind == "step"]
    rows = [
        EventRow(
            run_id=run_id,
            seq=i,
            span_id=step_ids[i * len(step_ids) // events],
            data=_EVENT_KINDS[i % len(_EVENT_KINDS)],
        )
        for i in range(events - 1)
    ]
    rows.append(
        EventRow(
            run_id=run_id,
            seq=events - 1,
            span_id=None,
            data={
                "type": "loop_complete",
                "status": "done",
                "iterations": events // 8,
                "total_duration_ms": steps * 10,
                "tools_used": ["read_file", "search"],
                "successful_tools": ["read_file", "search"],
            },
        )
    )
    calls = 2 * steps
    return WriteBatch(
        runs=[
            RunRow(
                id=run_id,
                name="big-agent",
                status="completed",
                started_at=start,
                ended_at=start + steps * step_ns / 1e9,
                budget={"max_usd": 50.0},
                input_tokens=130 * calls,
                output_tokens=25 * calls,
                cost_usd=0.000035 * calls,
                llm_calls=calls,
            )
        ],
        spans=spans,
        steps=ledger,
        events=rows,
        transcripts=transcripts,
    )


RARE, COMMON = "needle-7f3a", "workspace"
_SYSTEM = (
    "You are a careful research assistant working in a project workspace. Use the tools "
    "to read files; never guess at their content. " * 4
)


def _transcript(run_id: str, span_id: int, step: int, call: int, steps: int) -> TranscriptRow:
    """About 2 KB of prompt and a tool-call answer; ``RARE`` in one call only."""
    notes = f"Notes of task {step}: " + " ".join(f"item-{step}-{i}" for i in range(120))
    path = f"notes/task-{step}-{call}.md"
    if step == steps * 9 // 10 and call == 0:
        path = f"notes/{RARE}.md"
    return TranscriptRow(
        run_id=run_id,
        span_id=span_id,
        request={
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": _SYSTEM, "tool_calls": [], "tool_call_id": None},
                {"role": "user", "content": notes, "tool_calls": [], "tool_call_id": None},
            ],
        },
        response={
            "text": "",
            "tool_calls": [
                {"id": f"call_{step}_{call}", "name": "read_file", "arguments": {"path": path}}
            ],
        },
    )


def write_in_batches(store: SQLiteStore, batch: WriteBatch, size: int = 5000) -> None:
    store.write(
        WriteBatch(
            runs=batch.runs, spans=batch.spans, steps=batch.steps, transcripts=batch.transcripts
        )
    )
    for i in range(0, len(batch.events), size):
        store.write(WriteBatch(events=batch.events[i : i + size]))


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread on a free 127.0.0.1 port."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


_WAIT_FOR_ROW = """
async ([index, rowHeight]) => {
  const list = document.querySelector('[data-testid=event-list]');
  const selector = `.event-row[data-seq="${index}"]`;
  const t0 = performance.now();
  list.scrollTop = index * rowHeight;
  if (!document.querySelector(selector)) {
    await new Promise((resolve) => {
      const watch = new MutationObserver(() => {
        if (document.querySelector(selector)) { watch.disconnect(); resolve(); }
      });
      watch.observe(list, { childList: true });
    });
  }
  return performance.now() - t0;
}
"""

_API_TIMES = """
() => performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/api/'))
  .map((e) => [new URL(e.name).pathname + new URL(e.name).search, e.duration])
"""


def _api_label(path: str, run_id: str) -> str:
    return path.replace(run_id, "{id}")


def measure(
    browser: Any, url: str, run_id: str, loads: int, scrolls: int, events: int
) -> dict[str, Any]:
    """First screen times, the first screen's API times and scroll times for
    one run page."""
    first: list[float] = []
    api: dict[str, list[float]] = {}
    scroll_next: list[float] = []
    jump: list[float] = []
    for _ in range(loads):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{url}/runs/{run_id}")
        page.wait_for_selector("#main[data-ready=run]")
        first.append(page.evaluate("window.__steptraceFirstScreen") / 1000)
        for path, duration in page.evaluate(_API_TIMES):
            api.setdefault(_api_label(path, run_id), []).append(duration / 1000)
        context.close()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{url}/runs/{run_id}")
    page.wait_for_selector("#main[data-ready=run]")
    for n in range(1, scrolls + 1):
        index = min(events - 1, n * EVENT_PAGE)
        scroll_next.append(page.evaluate(_WAIT_FOR_ROW, [index, ROW_HEIGHT]) / 1000)
    jump.append(page.evaluate(_WAIT_FOR_ROW, [events // 2, ROW_HEIGHT]) / 1000)
    # Each search differs in case only (same matches): the page searches anew.
    variants = [RARE, RARE.upper(), RARE.title(), RARE.capitalize(), RARE.swapcase()]
    found = [
        page.evaluate(_SEARCH_IN_PAGE, variants[i % len(variants)]) / 1000
        for i in range(max(2, scrolls // 2))
    ]
    context.close()
    searches: dict[str, list[float]] = {RARE: [], COMMON: []}
    for _ in range(loads):
        for needle, times in searches.items():
            started = time.perf_counter()
            with urllib.request.urlopen(f"{url}/api/runs/{run_id}/search?q={needle}") as reply:
                body = json.loads(reply.read())
            times.append(time.perf_counter() - started)
            assert body["hits"], needle
    return {
        "first": first,
        "api": api,
        "scroll": scroll_next,
        "jump": jump,
        "search_rare": searches[RARE],
        "search_common": searches[COMMON],
        "search_page": found,
    }


_SEARCH_IN_PAGE = """
async (needle) => {
  const input = document.querySelector('[data-testid=search] input[name=q]');
  const results = () => document.querySelector('[data-testid=search-results]');
  input.value = needle;
  const t0 = performance.now();
  input.form.requestSubmit();
  await new Promise((resolve) => {
    const check = () => {
      const box = results();
      if (box && box.dataset.ready === '1' && box.querySelector('li[data-hit]')) resolve();
      else requestAnimationFrame(check);
    };
    check();
  });
  const t = performance.now() - t0;
  history.replaceState(null, '', location.pathname);
  input.value = '';
  return t;
}
"""


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms" if values else "     n/a"


def _ratio(big: list[float], small: list[float]) -> str:
    if not big or not small or statistics.median(small) < 0.001:  # nothing to compare to
        return "n/a"
    return f"{statistics.median(big) / statistics.median(small):.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer page loads and scrolls")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"no Chromium at {CHROMIUM}: apt-get install chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    loads, scrolls = (2, 3) if args.quick else (7, 10)
    big_events, small_events = 100_000, 100
    print(f"bench_portal  revision {revision()}  load {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-portal-") as folder:
        store = SQLiteStore(Path(folder) / "runs.db")
        started = time.perf_counter()
        big = synthetic_run("big-run", events=big_events, steps=1000, start=1_767_225_600.0)
        small = synthetic_run("small-run", events=small_events, steps=10, start=1_767_225_000.0)
        write_in_batches(store, big)
        write_in_batches(store, small)
        print(
            f"stored: {big_events:,} events, {len(big.spans):,} spans, {len(big.steps):,} "
            f"ledger rows (baseline {small_events} events, {len(small.spans)} spans) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        app = create_app(store)
        home = Path(folder) / "chromium"
        env: dict[str, str | float | bool] = {
            **os.environ,
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
        }
        try:
            with serving(app) as url, sync_playwright() as driver:
                browser = driver.chromium.launch(
                    executable_path=str(CHROMIUM),
                    env=env,
                    args=[
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, "
                        "EXCLUDE localhost",
                    ],
                )
                try:
                    # One throwaway load warms the browser and the file cache.
                    measure(browser, url, "small-run", 1, 0, small_events)
                    base = measure(browser, url, "small-run", loads, scrolls, small_events)
                    result = measure(browser, url, "big-run", loads, scrolls, big_events)
                finally:
                    browser.close()
        finally:
            app.reads.close()
            store.close()
    print(f"\n{'':34} {'100,000 events':>14} {'100 events':>12} {'ratio':>8}")
    print(
        f"{'first screen (browser)':34} {_ms(result['first']):>14} "
        f"{_ms(base['first']):>12} {_ratio(result['first'], base['first']):>8}"
    )
    for label in sorted(result["api"]):
        name = "  API " + (label.split("?")[0].replace("/api/runs/{id}", "").lstrip("/") or "run")
        small = base["api"].get(label, [])
        print(
            f"{name:34} {_ms(result['api'][label]):>14} {_ms(small):>12} "
            f"{_ratio(result['api'][label], small):>8}  {label}"
        )
    print(
        f"{'scroll: next 200 events drawn':34} {_ms(result['scroll']):>14} "
        f"{_ms(base['scroll']):>12} {_ratio(result['scroll'], base['scroll']):>8}"
    )
    print(
        f"{'scroll: jump to the middle':34} {_ms(result['jump']):>14} "
        f"{_ms(base['jump']):>12} {_ratio(result['jump'], base['jump']):>8}"
    )
    for key, label in (
        ("search_rare", "search API: word in one call"),
        ("search_common", "search API: word in every prompt"),
        ("search_page", "search in the page: Enter to matches"),
    ):
        print(
            f"{label:34} {_ms(result[key]):>14} {_ms(base[key]):>12} "
            f"{_ratio(result[key], base[key]):>8}"
        )
    worst = max(result["first"])
    verdict = "meets" if statistics.median(result["first"]) < TARGET_FIRST_SCREEN_S else "MISSES"
    print(
        f"\nfirst screen of the 100,000-event run: median "
        f"{statistics.median(result['first']):.3f} s, worst {worst:.3f} s over {loads} loads: "
        f"{verdict} the {TARGET_FIRST_SCREEN_S} s target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
