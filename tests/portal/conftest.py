"""Fixtures of the portal tests: a real SQLite store holding the demo agent run
(recorded by the real ``steptrace run`` command) and a hostile run, the portal
as an ASGI callable or served by uvicorn on a free loopback port, and Debian's
Chromium for pytest-playwright.

``demo`` is shared by every test of the session (they only read it).
``call(app, "GET", "/api/runs")`` drives the ASGI callable directly: no
socket, no thread. ``serving(app)`` runs uvicorn in a thread on 127.0.0.1 and
yields the base address; it stops the server on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from steptrace.portal import create_app
from steptrace.portal._app import PortalApp
from steptrace.store import (
    EventRow,
    LlmCallRow,
    RunRow,
    SpanRow,
    SQLiteStore,
    StepRow,
    TranscriptRow,
    WriteBatch,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
_CONSOLE_SCRIPT = Path(sys.executable).parent / "steptrace"
ENTRY = (
    [str(_CONSOLE_SCRIPT)] if _CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "steptrace.cli"]
)

SCRIPT_PAYLOAD = "<script>window.__pwned=1</script>"
IMG_PAYLOAD = '<img src=x onerror="window.__pwned=1">'
HOSTILE_RUN = "20260101-000000-hostile0"


# -- stores ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    """The session's store: the demo agent run, its wrapper run, the hostile run."""

    path: Path
    run_id: str
    """The ``agent-demo`` run (15 LLM calls, 3 steps, every event type but one)."""
    hostile_id: str


def write_hostile_run(store: SQLiteStore, run_id: str = HOSTILE_RUN) -> None:
    """A failed run whose model output, tool result, span names and event text
    carry markup that would run script if the page ever parsed it as HTML."""
    start = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
    ns = int(start * 1e9)
    ids = [7_000_000_000_000_001 + i for i in range(6)]  # beyond 2**53: ids stay strings
    run_span, persona, step, chat, tool, idle = ids
    spans = [
        SpanRow(
            run_id=run_id,
            span_id=run_span,
            parent_id=None,
            name="hostile",
            kind="run",
            start_ns=ns,
            end_ns=ns + 900_000_000,
            status="error",
            error=SCRIPT_PAYLOAD,
            metadata={
                "status": "failed",
                "input_tokens": 30,
                "output_tokens": 12,
                "cost_usd": 0.25,
            },
        ),
        SpanRow(
            run_id=run_id,
            span_id=persona,
            parent_id=run_span,
            name="attacker",
            kind="persona",
            start_ns=ns + 1_000_000,
            end_ns=ns + 800_000_000,
            status="ok",
            error=None,
            metadata={
                "status": "completed",
                "input_tokens": 30,
                "output_tokens": 12,
                "cost_usd": 0.25,
            },
            context={"max_usd": 1.0, "thresholds": [50, 80]},
        ),
        SpanRow(
            run_id=run_id,
            span_id=step,
            parent_id=persona,
            name=IMG_PAYLOAD,
            kind="step",
            start_ns=ns + 2_000_000,
            end_ns=ns + 700_000_000,
            status="ok",
            error=None,
            metadata={
                "status": "escalated",
                "input_tokens": 30,
                "output_tokens": 12,
                "cost_usd": 0.25,
                "persona": "attacker",
            },
            context={"max_tokens": 40, "persona": "attacker"},
        ),
        SpanRow(
            run_id=run_id,
            span_id=chat,
            parent_id=step,
            name="chat evil-model",
            kind="llm_call",
            start_ns=ns + 3_000_000,
            end_ns=ns + 300_000_000,
            status="ok",
            error=None,
            metadata={
                "gen_ai.system": "scripted",
                "gen_ai.request.model": "evil-model",
                "gen_ai.response.model": "evil-model",
                "gen_ai.usage.input_tokens": 30,
                "gen_ai.usage.output_tokens": 12,
                "steptrace.cost_usd": 0.25,
                "gen_ai.response.finish_reasons": ["stop"],
            },
        ),
        SpanRow(
            run_id=run_id,
            span_id=tool,
            parent_id=step,
            name="tool fetch_page",
            kind="tool",
            start_ns=ns + 310_000_000,
            end_ns=ns + 600_000_000,
            status="ok",
            error=None,
        ),
        # A persona that never called a model: it still counts as the run's persona.
        SpanRow(
            run_id=run_id,
            span_id=idle,
            parent_id=run_span,
            name="bystander",
            kind="persona",
            start_ns=ns + 810_000_000,
            end_ns=ns + 850_000_000,
            status="ok",
            error=None,
        ),
    ]
    events = [
        {
            "type": "llm_call",
            "call_id": "evil-1",
            "model": "evil-model",
            "input_tokens": 30,
            "output_tokens": 12,
            "cache_tokens": 0,
            "duration_ms": 297,
            "iteration": 1,
        },
        {
            "type": "tool_execution",
            "tool_name": "fetch_page",
            "tool_use_id": "call_1",
            "duration_ms": 290,
            "status": "ok",
            "classification": "read_only",
            "iteration": 1,
        },
        {
            "type": "tool_rejected",
            "tool_name": IMG_PAYLOAD,
            "reason": SCRIPT_PAYLOAD,
            "iteration": 2,
        },
        {
            "type": "loop_complete",
            "status": "error",
            "iterations": 2,
            "total_duration_ms": 700,
            "tools_used": ["fetch_page"],
            "successful_tools": ["fetch_page"],
        },
    ]
    request = {
        "model": "evil-model",
        "messages": [
            {
                "role": "user",
                "content": "Summarise the page.",
                "tool_calls": [],
                "tool_call_id": None,
            },
            {
                "role": "assistant",
                "content": "",
                "tool_call_id": None,
                "tool_calls": [{"id": "call_1", "name": "fetch_page", "arguments": {}}],
            },
            {
                "role": "tool",
                "content": f"page says {IMG_PAYLOAD}",
                "tool_calls": [],
                "tool_call_id": "call_1",
            },
        ],
    }
    response = {"text": f"Here you go: {SCRIPT_PAYLOAD}", "tool_calls": []}
    ledger = {
        "name": IMG_PAYLOAD,
        "function": "agent_loop",
        "model": "evil-model",
        "input_tokens": 30,
        "output_tokens": 12,
        "cost_usd": 0.25,
        "llm_calls": 1,
        "status": "escalated",
        "error": None,
        "persona": "attacker",
        "span_id": step,
        "parent_span_id": persona,
        "started_ns": ns + 2_000_000,
        "ended_ns": ns + 700_000_000,
        "max_tokens": 40,
        "max_usd": None,
    }
    store.write(
        WriteBatch(
            runs=[
                RunRow(
                    id=run_id,
                    name="hostile",
                    status="failed",
                    started_at=start,
                    ended_at=start + 0.9,
                    error=SCRIPT_PAYLOAD,
                    metadata={"note": SCRIPT_PAYLOAD},
                    budget={"max_usd": 1.0},
                    input_tokens=30,
                    output_tokens=12,
                    cost_usd=0.25,
                    llm_calls=1,
                )
            ],
            spans=spans,
            events=[
                EventRow(run_id=run_id, seq=i, span_id=step, data=e) for i, e in enumerate(events)
            ],
            steps=[StepRow(run_id=run_id, seq=0, data=ledger)],
            llm_calls=[
                LlmCallRow(
                    run_id=run_id,
                    seq=0,
                    span_id=step,
                    step=IMG_PAYLOAD,
                    persona="attacker",
                    model="evil-model",
                    input_tokens=30,
                    output_tokens=12,
                    cache_tokens=0,
                    cost_usd=0.25,
                    duration_ms=297,
                    at=start + 0.3,
                )
            ],
            transcripts=[
                TranscriptRow(run_id=run_id, span_id=chat, request=request, response=response)
            ],
        )
    )


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo agent run recorded by ``steptrace run`` into a real SQLite file,
    plus the hostile run."""
    folder = tmp_path_factory.mktemp("portal-store")
    path = folder / "runs.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPTRACE_")}
    done = subprocess.run(
        [*ENTRY, "run", "--quiet", "--store", str(path), str(ROOT / "examples/agent_demo.py")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    store = SQLiteStore(path)
    try:
        (run,) = store.list_runs(name="agent-demo")
        write_hostile_run(store)
    finally:
        store.close()
    return Demo(path, run.id, HOSTILE_RUN)


@pytest.fixture
def demo_store(demo: Demo) -> Iterator[SQLiteStore]:
    store = SQLiteStore(demo.path)
    yield store
    store.close()


@contextlib.contextmanager
def portal(store: SQLiteStore, token: str | None = None) -> Iterator[PortalApp]:
    app = create_app(store, token=token)
    try:
        yield app
    finally:
        app.reads.close()


@pytest.fixture
def app(demo_store: SQLiteStore) -> Iterator[PortalApp]:
    with portal(demo_store) as made:
        yield made


# -- calling the ASGI app ----------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: Any,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1:8765",
) -> Response:
    """One HTTP request through the ASGI callable, as uvicorn would pass it."""
    path, _, query = target.partition("?")
    sent: list[dict[str, Any]] = []
    raw_headers = [(b"host", host.encode())] + [
        (k.lower().encode(), v.encode()) for k, v in (headers or {}).items()
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),  # as uvicorn passes it: decoded, the raw bytes aside
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, *bodies = sent
    header_list = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    return Response(
        start["status"],
        dict(header_list),
        header_list,
        b"".join(m.get("body", b"") for m in bodies),
    )


# -- serving over a real socket ----------------------------------------------------------


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread on a free 127.0.0.1 port: its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", server_header=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="portal-test"
    )
    thread.start()
    deadline = time.monotonic() + 30  # a hang guard, not a timing assertion
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


# -- Chromium ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Debian's Chromium, headless, resolving no name but the loopback
    (``playwright install`` downloads a browser: never run it)."""
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        reason = (
            f"no Chromium at {CHROMIUM}: `apt-get install chromium` "
            "(the portal's browser tests need it)"
        )
        if os.environ.get("STEPTRACE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("chromium")
    return {
        "executable_path": str(CHROMIUM),
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost",
        ],
        "env": {
            **os.environ,
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
        },
    }


def synthetic_run(
    run_id: str, *, steps: int, calls_per_step: int, events: int, status: str = "completed"
) -> WriteBatch:
    """A run of ``steps`` steps under one persona, each with ``calls_per_step``
    LLM calls and as many tool spans, the last step started inside a tool (so
    its ancestors include a leaf span), and ``events`` events of every type."""
    start = 1_767_312_000.0 + zlib.crc32(run_id.encode()) % 1000
    ns = int(start * 1e9)
    base = 1_000_000 * (zlib.crc32(run_id.encode()) % 1000 + 1)
    run_span, persona = base, base + 1
    spans = [
        SpanRow(
            run_id=run_id,
            span_id=run_span,
            parent_id=None,
            name=run_id,
            kind="run",
            start_ns=ns,
            end_ns=ns + 10**10,
            status="ok",
            error=None,
        ),
        SpanRow(
            run_id=run_id,
            span_id=persona,
            parent_id=run_span,
            name="worker",
            kind="persona",
            start_ns=ns + 1,
            end_ns=ns + 10**10 - 1,
            status="ok",
            error=None,
            context={"max_usd": 5.0},
        ),
    ]
    next_id = base + 2
    clock = ns + 2
    parent = persona
    for s in range(steps):
        step_id = next_id
        next_id += 1
        spans.append(
            SpanRow(
                run_id=run_id,
                span_id=step_id,
                parent_id=parent,
                name=f"step-{s}",
                kind="step",
                start_ns=clock,
                end_ns=clock + 10**6,
                status="ok",
                error=None,
                metadata={
                    "status": ("completed", "failed", "skipped", "escalated")[s % 4],
                    "input_tokens": 10 * calls_per_step,
                    "output_tokens": 2 * calls_per_step,
                },
                context={"max_tokens": 100 * calls_per_step},
            )
        )
        clock += 1
        for c in range(calls_per_step):
            for kind in ("llm_call", "tool"):
                spans.append(
                    SpanRow(
                        run_id=run_id,
                        span_id=next_id,
                        parent_id=step_id,
                        name=f"{kind} {c}",
                        kind=kind,
                        start_ns=clock,
                        end_ns=clock + 500,
                        status="ok",
                        error=None,
                        metadata={
                            "gen_ai.usage.input_tokens": 10,
                            "gen_ai.usage.output_tokens": 2,
                            "gen_ai.response.model": "m",
                        }
                        if kind == "llm_call"
                        else {},
                    )
                )
                next_id += 1
                clock += 1
        if s == steps - 2:
            parent = spans[-1].span_id  # the next step starts inside this tool span
    kinds: list[tuple[str, dict[str, Any]]] = [
        (
            "llm_call",
            {
                "model": "m",
                "input_tokens": 10,
                "output_tokens": 2,
                "duration_ms": 3,
                "iteration": 1,
                "call_id": "c",
                "cache_tokens": 0,
            },
        ),
        (
            "tool_execution",
            {
                "tool_name": "t",
                "tool_use_id": "u",
                "duration_ms": 2,
                "status": "ok",
                "classification": "read_only",
                "iteration": 1,
            },
        ),
        ("tool_rejected", {"tool_name": "w", "reason": "no", "iteration": 1}),
        ("loop_intervention", {"tool_name": "t", "kind": "warn", "count": 2, "iteration": 1}),
        ("phase_change", {"from_phase": "a", "to_phase": "b", "iteration": 1}),
        ("context_compaction", {"archived_messages": 3, "new_summary_len": 9, "iteration": 1}),
        (
            "llm_call",
            {
                "model": "m2",
                "input_tokens": 1,
                "output_tokens": 1,
                "duration_ms": 1,
                "iteration": 2,
                "call_id": "d",
                "cache_tokens": 0,
            },
        ),
    ]
    step_ids = [sp.span_id for sp in spans if sp.kind == "step"]
    rows = [
        EventRow(
            run_id=run_id,
            seq=i,
            span_id=step_ids[i % len(step_ids)] if step_ids else None,
            data={"type": kinds[i % len(kinds)][0], **kinds[i % len(kinds)][1]},
        )
        for i in range(max(0, events - 1))
    ]
    rows.append(
        EventRow(
            run_id=run_id,
            seq=len(rows),
            span_id=None,
            data={
                "type": "loop_complete",
                "status": "done",
                "iterations": 2,
                "total_duration_ms": 40,
                "tools_used": ["t"],
                "successful_tools": ["t"],
            },
        )
    )
    ended = None if status == "running" else start + 10
    return WriteBatch(
        runs=[
            RunRow(
                id=run_id,
                name="synthetic",
                status=status,
                started_at=start,
                ended_at=ended,
                input_tokens=10 * steps * calls_per_step,
                output_tokens=2 * steps * calls_per_step,
                llm_calls=steps * calls_per_step,
                cost_usd=0.001 * steps,
                budget={"max_usd": 5.0},
            )
        ],
        spans=spans,
        events=rows,
    )
