"""The portal in a real Chromium (pytest-playwright, Debian's browser): the
runs list and its filter, a run's step tree (expand, collapse, budget bars,
statuses), the waterfall, the event filter, an LLM call's prompt and
response, screenshots; hostile model output shown as text and never run; a
run still going updating on the page without a reload; and no request
leaving 127.0.0.1. Every wait is for an element or a state, never a duration.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserType,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    expect,
    sync_playwright,
)

import steptrace
from steptrace.events import LlmCall, PhaseChange
from steptrace.store import SQLiteStore, StoreWriter
from steptrace.tracing import emit_event

from .conftest import (
    HOSTILE_RUN,
    IMG_PAYLOAD,
    SCRIPT_PAYLOAD,
    Demo,
    portal,
    serving,
    synthetic_run,
)

BIG_RUN = "20260102-000000-bigrun00"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# pytest-playwright keeps its driver for the whole session, and the sync API
# leaves its event loop marked running in the main thread meanwhile: any later
# test calling asyncio.run() would fail. These overrides end it with this module.


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser_context_args() -> dict[str, Any]:
    return {"viewport": {"width": 1280, "height": 900}}


@pytest.fixture(scope="module")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    chosen: BrowserType = getattr(playwright, browser_name)
    return chosen


@pytest.fixture(scope="module")
def browser(
    browser_type: BrowserType, browser_type_launch_args: dict[str, Any]
) -> Iterator[Browser]:
    launched = browser_type.launch(**browser_type_launch_args)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def base_url_demo(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The portal over a copy of the demo store, served on a free loopback port."""
    path = tmp_path_factory.mktemp("browser-store") / "runs.db"
    shutil.copy(demo.path, path)
    store = SQLiteStore(path)
    store.write(synthetic_run(BIG_RUN, steps=40, calls_per_step=15, events=3000))
    try:
        with portal(store) as app, serving(app) as url:
            yield url
    finally:
        store.close()


@pytest.fixture
def requests_seen(page: Page) -> Iterator[list[str]]:
    """Every URL the page asked for; none may leave 127.0.0.1. The page must
    also log no error (a CSP violation or a script error would show there)."""
    seen: list[str] = []
    errors: list[str] = []

    def record(request: Request) -> None:
        seen.append(request.url)

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("request", record)
    page.on("console", console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield seen
    assert errors == [], f"the page logged errors: {errors}"
    outside = [u for u in seen if not re.match(r"^(http://127\.0\.0\.1:\d+/|data:|about:)", u)]
    assert outside == [], f"the page asked for something beyond the loopback: {outside}"


def shot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000


def test_runs_list_filter_and_open_a_run(
    page: Page, base_url_demo: str, demo: Demo, requests_seen: list[str], tmp_path: Path
) -> None:
    page.goto(base_url_demo + "/")
    expect(page.locator("#main[data-ready=list]")).to_be_visible()
    rows = page.locator("table.runs tbody tr[data-run-id]")
    expect(rows).to_have_count(4)
    expect(page.get_by_test_id("totals")).to_contain_text("4 runs")
    expect(page.get_by_test_id("totals")).to_contain_text("616 LLM calls")
    expect(page.locator("svg[aria-label='cost by model'] .chart-bar")).to_have_count(3)
    expect(page.locator("svg[aria-label='cost by day'] .chart-bar").first).to_be_visible()
    demo_row = page.locator(f"tr[data-run-id='{demo.run_id}']")
    expect(demo_row).to_contain_text("agent-demo")
    expect(demo_row).to_contain_text("maintainer")
    expect(demo_row).to_contain_text("12,707")  # 12,349 in + 358 out
    shot(page, tmp_path / "runs.png")

    page.locator("select[name=status]").select_option("failed")
    expect(page).to_have_url(re.compile(r"\?status=failed$"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", HOSTILE_RUN)
    expect(page.get_by_test_id("totals")).to_contain_text("1 run ")
    page.locator("select[name=persona]").select_option("maintainer")
    expect(page.locator("table.runs tbody")).to_contain_text("No runs match.")
    page.get_by_role("button", name="Clear").click()
    expect(rows).to_have_count(4)

    page.locator("button.sort[data-sort=cost]").click()
    expect(page).to_have_url(re.compile(r"sort=cost"))
    expect(rows.first).to_have_attribute("data-run-id", HOSTILE_RUN)  # $0.25, the dearest

    demo_row.locator("a.run-link").click()
    expect(page).to_have_url(f"{base_url_demo}/runs/{demo.run_id}")
    expect(page.locator("#main[data-ready=run]")).to_be_visible()
    expect(page.get_by_test_id("run-head")).to_contain_text("agent-demo")


def test_a_run_tree_waterfall_events_and_a_call(
    page: Page, base_url_demo: str, demo: Demo, requests_seen: list[str], tmp_path: Path
) -> None:
    page.goto(f"{base_url_demo}/runs/{demo.run_id}")
    expect(page.locator("#main[data-ready=run]")).to_be_visible()
    head = page.get_by_test_id("run-head")
    expect(head).to_contain_text("15")
    expect(head).to_contain_text("12,349 in · 358 out")
    expect(head.locator(".run-budget .budget")).to_contain_text("/ $1.00")

    # The tree opens on the run and persona: steps shown, their calls not yet.
    tree = page.get_by_test_id("tree")
    steps = tree.locator("li[data-kind=step]")
    expect(steps).to_have_count(3)
    expect(tree.locator("li[data-kind=llm_call]")).to_have_count(0)
    review = steps.filter(has_text="review_workspace").first
    expect(review.locator(":scope > .row-wrap .badge")).to_have_text("completed")
    expect(review.locator(":scope > .row-wrap .budget")).to_contain_text(
        "11,986 / 50,000 tokens · 24%"
    )
    draft = steps.filter(has_text="draft_release_notes").first
    expect(draft.locator(":scope > .row-wrap .badge")).to_have_text("skipped")
    expect(draft.locator(":scope > .row-wrap .budget .fill")).to_have_class(
        re.compile("status-skipped")
    )
    expect(page.locator("[data-step-status=completed]")).to_have_text("2 completed")
    expect(page.locator("[data-step-status=skipped]")).to_have_text("1 skipped")
    loops = page.get_by_test_id("loops").locator("tbody tr")
    expect(loops).to_have_count(2)
    expect(loops.nth(0)).to_contain_text("review_workspace")
    expect(loops.nth(0)).to_contain_text("done")
    expect(loops.nth(1)).to_contain_text("draft_release_notes")
    expect(loops.nth(1)).to_contain_text("budget_exhausted")

    review.get_by_role("button", name="expand review_workspace").click()
    expect(review.locator("li[data-kind=llm_call]")).to_have_count(12)
    expect(review.locator("li[data-kind=tool]")).to_have_count(11)
    expect(review).to_have_attribute("aria-expanded", "true")
    tree.get_by_role("button", name="collapse review_workspace").click()
    expect(tree.locator("li[data-kind=llm_call]")).to_have_count(0)
    page.get_by_role("button", name="Expand all").click()
    expect(tree.locator("li[data-kind=llm_call]")).to_have_count(15)
    page.get_by_role("button", name="Collapse all").click()
    expect(tree.locator("li[data-kind=step]")).to_have_count(0)

    # The waterfall: one row and bar per span.
    timeline = page.get_by_test_id("timeline")
    expect(timeline.locator(".wf-row")).to_have_count(34)
    expect(timeline.locator(".wf-bar.kind-llm_call")).to_have_count(15)
    box = timeline.locator(".wf-row[data-span-id] .wf-bar").first.bounding_box()
    assert box is not None
    assert box["width"] > 0

    # Events: every type, then one type only.
    events = page.get_by_test_id("event-list")
    expect(page.get_by_test_id("event-count")).to_have_text("37 events")
    expect(events.locator(".event-row").first).to_be_visible()
    page.locator("button[data-event-type=tool_rejected]").click()
    expect(page.get_by_test_id("event-count")).to_have_text("1 events of type tool_rejected")
    expect(events.locator(".event-row")).to_have_count(1)
    expect(events.locator(".event-row")).to_contain_text("not available in phase `plan`")
    page.locator("button[data-event-type=loop_intervention]").click()
    expect(events.locator(".event-row")).to_have_count(3)
    types = events.locator(".event-row").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert sorted(set(types)) == ["loop_intervention", "tool_rejected"]
    page.locator("button[data-event-type='']").click()
    expect(page.get_by_test_id("event-count")).to_have_text("37 events")

    # The first LLM call: its prompt (the task) and response (a tool call).
    calls = page.get_by_test_id("calls").locator("tbody tr")
    expect(calls).to_have_count(15)
    calls.first.click()
    detail = page.get_by_test_id("call-detail")
    expect(detail).to_have_attribute("data-ready", "1")
    expect(detail.get_by_test_id("prompt")).to_contain_text("Review the project workspace")
    expect(detail.get_by_test_id("response")).to_contain_text("→ list_files(")
    expect(detail).to_contain_text("242 in · 4 out")
    shot(page, tmp_path / "run.png")


def test_hostile_content_is_text_and_runs_nothing(
    page: Page, base_url_demo: str, requests_seen: list[str], tmp_path: Path
) -> None:
    page.goto(f"{base_url_demo}/runs/{HOSTILE_RUN}")
    expect(page.locator("#main[data-ready=run]")).to_be_visible()
    expect(page.get_by_test_id("run-head").locator("pre.error")).to_have_text(SCRIPT_PAYLOAD)
    page.get_by_role("button", name="Expand all").click()
    tree = page.get_by_test_id("tree")
    expect(tree.locator("li[data-kind=step] .name").first).to_have_text(IMG_PAYLOAD)
    expect(tree.locator("li[data-kind=step] .badge").first).to_have_text("escalated")
    page.locator("button[data-event-type=tool_rejected]").click()
    expect(page.get_by_test_id("event-list").locator(".event-row")).to_contain_text(
        f"{IMG_PAYLOAD}: {SCRIPT_PAYLOAD}"
    )
    tree.locator("a.call-link").click()
    detail = page.get_by_test_id("call-detail")
    expect(detail).to_have_attribute("data-ready", "1")
    expect(detail.get_by_test_id("response")).to_have_text(f"Here you go: {SCRIPT_PAYLOAD}")
    expect(detail.get_by_test_id("prompt")).to_contain_text(f"page says {IMG_PAYLOAD}")
    shot(page, tmp_path / "hostile.png")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    # The markup exists only as text: no element was made from it.
    assert page.locator("#main script, #main img").count() == 0


def test_a_running_run_updates_without_a_reload(
    page: Page, tmp_path: Path, requests_seen: list[str]
) -> None:
    store = SQLiteStore(tmp_path / "live.db")
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)

    @steptrace.step(budget={"max_tokens": 1000})
    def work(n: int) -> None:
        steptrace.record_llm_usage("m-live", 100 * n, n, cost_usd=0.001)
        emit_event(PhaseChange(from_phase=f"phase-{n}", to_phase=f"phase-{n + 1}", iteration=n))

    try:
        with portal(store) as app, serving(app) as url:
            with steptrace.run("live-run") as run:
                work(1)
                assert writer.flush()
                page.goto(f"{url}/runs/{run.id}")
                expect(page.locator("#main[data-ready=run]")).to_be_visible()
                page.evaluate("window.__marker = 'same page'")
                head = page.get_by_test_id("run-head")
                expect(head.locator(".live")).to_be_visible()
                expect(head).to_contain_text("still running")
                expect(head).to_contain_text("100 in · 1 out")
                expect(page.get_by_test_id("event-count")).to_have_text("1 events")
                steps = page.get_by_test_id("tree").locator("li[data-kind=step]")
                expect(steps).to_have_count(1)
                work(2)
                assert writer.flush()
                expect(steps).to_have_count(2)
                expect(head).to_contain_text("300 in · 3 out")
                expect(page.get_by_test_id("event-count")).to_have_text("2 events")
                expect(page.locator(".event-row[data-seq='1']")).to_contain_text(
                    "phase-2 → phase-3"
                )
            assert writer.flush()
            expect(head.locator(".badge").first).to_have_text("completed")
            expect(head.locator(".live")).to_be_hidden()
            assert page.evaluate("window.__marker") == "same page"  # no reload happened
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
        store.close()


def test_a_big_run_pages_its_events_and_leaf_spans(
    page: Page, base_url_demo: str, requests_seen: list[str]
) -> None:
    page.goto(f"{base_url_demo}/runs/{BIG_RUN}")
    expect(page.locator("#main[data-ready=run]")).to_be_visible()
    expect(page.get_by_test_id("event-count")).to_have_text("3,000 events")
    events = page.get_by_test_id("event-list")
    expect(events.locator(".event-row[data-seq='0']")).to_be_visible()
    # The list holds only the rows near the view, whatever the run's length.
    assert events.locator(".event-row").count() < 100
    events.evaluate("list => { list.scrollTop = 2500 * 26; }")
    expect(events.locator(".event-row[data-seq='2500']")).to_be_visible()
    expect(events.locator(".event-row[data-seq='0']")).to_have_count(0)
    assert any("/events?offset=2400&limit=200" in u for u in requests_seen)
    # 1,242 spans: the structure has the steps; a step's calls come from the server.
    tree = page.get_by_test_id("tree")
    expect(tree.locator("li[data-kind=llm_call]")).to_have_count(0)
    step = tree.locator("li[data-kind=step]").first
    step.get_by_role("button", name="expand step-0").click()
    expect(step.locator("li[data-kind=llm_call]")).to_have_count(15)
    expect(step.locator("li[data-kind=tool]")).to_have_count(15)
    assert any("/children?leaves=1" in u for u in requests_seen)


def test_an_unknown_run_says_so(page: Page, base_url_demo: str) -> None:
    page.goto(f"{base_url_demo}/runs/no-such-run")
    expect(page.get_by_role("alert")).to_contain_text("no run 'no-such-run' in this store")
    page.get_by_role("link", name="Runs").click()
    expect(page.locator("#main[data-ready=list]")).to_be_visible()


def test_the_token_link_lets_the_browser_in(
    page: Page, demo: Demo, browser: Browser, requests_seen: list[str]
) -> None:
    store = SQLiteStore(demo.path)
    try:
        with portal(store, token="tok-123") as app, serving(app) as url:
            page.goto(f"{url}/runs/{demo.run_id}?token=tok-123")
            expect(page).to_have_url(f"{url}/runs/{demo.run_id}")  # the token left the address
            expect(page.locator("#main[data-ready=run]")).to_be_visible()
            stranger = browser.new_context()
            try:
                other = stranger.new_page()
                refused = other.goto(f"{url}/runs/{demo.run_id}")
                assert refused is not None
                assert refused.status == 401
                expect(other.locator("body")).to_contain_text("this portal needs its token")
            finally:
                stranger.close()
    finally:
        store.close()


# -- addresses, search and the small things (issue 12) -------------------------------------


def _in_view(page: Page, selector: str) -> Any:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, selector
    viewport = page.viewport_size
    assert viewport is not None
    assert box["y"] >= 0, box
    assert box["y"] < viewport["height"], box
    assert box["x"] + box["width"] <= viewport["width"] + 1, box
    return box


def test_every_object_has_a_link_that_reopens_it(
    page: Page, base_url_demo: str, demo: Demo, requests_seen: list[str]
) -> None:
    with SQLiteStore(demo.path) as store:
        newest = store.list_runs(limit=1)[0].id
        stored = store.get_run(demo.run_id)
    assert stored is not None
    # Runs open as the CLI names them; the address then shows the id.
    page.goto(f"{base_url_demo}/runs/last")
    expect(page.locator("#main[data-ready=run]")).to_be_visible()
    expect(page).to_have_url(f"{base_url_demo}/runs/{newest}")
    page.goto(f"{base_url_demo}/runs/agent-demo")
    expect(page).to_have_url(f"{base_url_demo}/runs/{demo.run_id}")
    expect(page.get_by_test_id("run-id")).to_have_text(demo.run_id)

    # An LLM call clicked far down the page opens where the reader is looking,
    # and its address reopens it.
    calls = page.get_by_test_id("calls").locator("tbody tr")
    calls.nth(4).scroll_into_view_if_needed()
    span_id = calls.nth(4).get_attribute("data-span-id")
    calls.nth(4).click()
    detail = page.get_by_test_id("call-detail")
    expect(detail).to_have_attribute("data-ready", "1")
    expect(page).to_have_url(f"{base_url_demo}/runs/{demo.run_id}#call={span_id}")
    _in_view(page, "[data-testid=call-detail] h2")
    page.go_back()
    expect(detail).to_be_hidden()
    page.goto(f"{base_url_demo}/runs/{demo.run_id}#call={span_id}")
    expect(detail).to_have_attribute("data-ready", "1")
    expect(detail).to_have_attribute("data-span-id", str(span_id))
    expect(detail.get_by_test_id("call-link")).to_have_attribute(
        "href", f"/runs/{demo.run_id}#call={span_id}"
    )
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()

    # A step, by its span.
    draft = next(s for s in stored.spans if s.name == "draft_release_notes")
    page.goto(f"{base_url_demo}/runs/{demo.run_id}#span={draft.span_id}")
    node = page.locator(f"li.highlight[data-span-id='{draft.span_id}']")
    expect(node).to_be_visible()
    _in_view(page, f"li.highlight[data-span-id='{draft.span_id}'] .name")
    expect(node.locator("a.permalink").first).to_have_attribute(
        "href", f"/runs/{demo.run_id}#span={draft.span_id}"
    )

    # An event deep in a long run: scrolled to and shown.
    page.goto(f"{base_url_demo}/runs/{BIG_RUN}#event=2500")
    row = page.locator(".event-row.highlight[data-seq='2500']")
    expect(row).to_be_visible()
    expect(page.get_by_test_id("event-detail")).to_contain_text("event #2500")
    expect(page.get_by_test_id("event-detail").locator("a.permalink")).to_have_attribute(
        "href", f"/runs/{BIG_RUN}#event=2500"
    )


def test_search_in_a_run_jumps_to_its_matches(
    page: Page, base_url_demo: str, demo: Demo, requests_seen: list[str], tmp_path: Path
) -> None:
    page.goto(f"{base_url_demo}/runs/{demo.run_id}")
    expect(page.locator("#main[data-ready=run]")).to_be_visible()
    box = page.get_by_role("searchbox", name="search in this run")
    box.fill("status.md")
    box.press("Enter")
    expect(page).to_have_url(re.compile(r"#q=status\.md$"))
    results = page.get_by_test_id("search-results")
    expect(results).to_have_attribute("data-ready", "1")
    hits = results.locator("li[data-hit]")
    assert hits.count() >= 5
    kinds = set(hits.evaluate_all("items => items.map(i => i.dataset.kind)"))
    assert {"prompt", "tool_arguments"} <= kinds
    expect(hits.first.locator("mark")).to_have_text("STATUS.md")
    assert any("/search?q=status.md" in u for u in requests_seen)

    # Next: the first match, in its call, marked and in view.
    page.get_by_test_id("next-hit").click()
    expect(page.get_by_test_id("hit-counter")).to_have_text(re.compile(r"^match 1 of \d+$"))
    detail = page.get_by_test_id("call-detail")
    expect(detail).to_have_attribute("data-ready", "1")
    expect(detail.locator("mark").first).to_have_text("STATUS.md")
    expect(detail.locator("mark").first).to_be_in_viewport()
    page.get_by_test_id("next-hit").click()
    expect(page.get_by_test_id("hit-counter")).to_have_text(re.compile(r"^match 2 of \d+$"))
    shot(page, tmp_path / "search.png")

    # A match in an event scrolls the event list to it; the search stays in the address.
    page.goto(f"{base_url_demo}/runs/{demo.run_id}#q=not%20available%20in%20phase")
    expect(results).to_have_attribute("data-ready", "1")
    results.locator("li[data-kind=error] button.hit").first.click()
    expect(page).to_have_url(re.compile(r"#event=\d+&q=not"))
    expect(page.locator(".event-row.highlight")).to_contain_text("not available in phase")


def test_timeline_starts_where_the_work_starts(
    page: Page, base_url_demo: str, demo: Demo, requests_seen: list[str]
) -> None:
    page.goto(f"{base_url_demo}/runs/{demo.run_id}")
    timeline = page.get_by_test_id("timeline")
    expect(timeline.locator(".wf-row")).to_have_count(34)
    start = float(timeline.get_attribute("data-start") or "0")
    with SQLiteStore(demo.path) as store:
        stored = store.get_run(demo.run_id)
    assert stored is not None
    first_step = min(s.start_ns for s in stored.spans if s.kind == "step")
    origin = round(stored.run.started_at * 1e9)
    assert start == pytest.approx((first_step - origin) / 1e6, abs=0.01)
    # The first step's bar begins at the left edge of the track.
    track = timeline.locator(".wf-row .wf-track").first.bounding_box()
    step_id = next(s.span_id for s in stored.spans if s.start_ns == first_step)
    bar = timeline.locator(f".wf-row[data-span-id='{step_id}'] .wf-bar").bounding_box()
    assert track is not None
    assert bar is not None
    assert bar["x"] - track["x"] < 2
    page.get_by_test_id("timeline-range").click()
    expect(timeline).to_have_attribute("data-start", "0")


def test_small_things_look_right(
    page: Page, base_url_demo: str, demo: Demo, tmp_path: Path, requests_seen: list[str]
) -> None:
    # The run id stays on one line, even in a narrow window.
    page.set_viewport_size({"width": 640, "height": 800})
    page.goto(f"{base_url_demo}/runs/{demo.run_id}")
    run_id = page.get_by_test_id("run-id")
    expect(run_id).to_have_text(demo.run_id)
    height = run_id.evaluate("el => el.getBoundingClientRect().height")
    line = run_id.evaluate("el => parseFloat(getComputedStyle(el).lineHeight) || 20")
    assert height < 1.5 * line

    # Disabled pager buttons look disabled, not like the enabled ones.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base_url_demo}/")
    expect(page.locator("#main[data-ready=list]")).to_be_visible()
    newer = page.get_by_role("button", name=re.compile("Newer"))
    expect(newer).to_be_disabled()
    style = "el => [getComputedStyle(el).backgroundColor, getComputedStyle(el).cursor]"
    disabled = newer.evaluate(style)
    enabled = page.get_by_role("button", name="Clear").evaluate(style)
    accent = "rgb(53, 89, 199)"  # an enabled button's fill
    assert disabled[1] == "not-allowed"
    assert disabled[0] not in (enabled[0], accent)

    # Calls too quick to time (scripted) read "under 1 ms", not "0 ms".
    store = SQLiteStore(tmp_path / "quick.db")
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("quick") as run:
            emit_event(
                LlmCall(
                    call_id="c",
                    model="m",
                    input_tokens=1,
                    output_tokens=1,
                    cache_tokens=0,
                    duration_ms=0,
                    iteration=0,
                )
            )
        assert writer.flush()
        with portal(store) as app, serving(app) as url:
            page.goto(f"{url}/runs/{run.id}")
            summary = page.get_by_test_id("summary")
            expect(summary).to_have_attribute("data-ready", "1")
            expect(summary).to_contain_text("LLM timeunder 1 ms")
            expect(summary).to_contain_text("1 (1 outside any loop)")
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
        store.close()


def test_a_partly_priced_run_says_so_in_its_header(
    page: Page, tmp_path: Path, requests_seen: list[str]
) -> None:
    store = SQLiteStore(tmp_path / "unpriced.db")
    writer = StoreWriter(store)
    steptrace.add_span_processor(writer)
    try:
        with steptrace.run("partly priced") as run:
            steptrace.record_llm_usage("m-priced", 10, 10, cost_usd=0.15)
            steptrace.record_llm_usage("m-unknown", 10, 10)
        assert writer.flush()
        with portal(store) as app, serving(app) as url:
            page.goto(f"{url}/runs/{run.id}")
            expect(page.locator("#main[data-ready=run]")).to_be_visible()
            expect(page.get_by_test_id("run-cost")).to_have_text("$0.1500 + 1 unknown")
    finally:
        steptrace.remove_span_processor(writer)
        writer.close()
        store.close()
