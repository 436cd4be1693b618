// The steptrace portal's page: the runs list and one run, drawn from the JSON API.
//
// Everything shown that came from a run (names, metadata, prompts, model
// output, tool results) enters the page as text: elements are built with
// createElement and text nodes (the `h` helper), never from HTML strings, so
// nothing a model wrote can become markup or script. The page loads no other
// resource than its own script and style sheet; charts are SVG drawn here.
//
// Addresses: /runs/<ref> opens a run (an id, a unique prefix, `last` or a run
// name, as in the CLI; the address then shows its id). The fragment names one
// object in it, so any of them can be shared and reopened: #span=<id> (a step,
// persona or other span), #call=<span id> (an LLM call, opened in a side panel
// where the reader is looking), #event=<seq>, and #q=<text> (a search in the run).
"use strict";

(() => {
  // -- DOM helpers ---------------------------------------------------------------------

  const SVG_NS = "http://www.w3.org/2000/svg";

  // h("div", {class: "x", onclick: f}, "text", child, [more]) -> element.
  // Strings always become text nodes; attribute values are set as values.
  function build(el, props, children) {
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.setAttribute("class", value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    const add = (child) => {
      if (child === null || child === undefined || child === false) return;
      if (Array.isArray(child)) child.forEach(add);
      else if (child instanceof Node) el.appendChild(child);
      else el.appendChild(document.createTextNode(String(child)));
    };
    add(children);
    return el;
  }
  const h = (tag, props, ...children) => build(document.createElement(tag), props, children);
  const s = (tag, props, ...children) =>
    build(document.createElementNS(SVG_NS, tag), props, children);
  const clear = (el) => {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  };
  const main = () => document.getElementById("main");

  // -- formatting ----------------------------------------------------------------------

  const intFormat = new Intl.NumberFormat("en-US");
  const fmtInt = (n) => (n === null || n === undefined ? "–" : intFormat.format(n));
  function fmtUsd(v) {
    // A cost is null only when no price was known: say so, never "$0".
    if (v === null || v === undefined) return "cost unknown";
    if (v === 0) return "$0";
    if (Math.abs(v) < 0.01) return "$" + v.toPrecision(3).replace(/0+$/, "").replace(/\.$/, "");
    return "$" + v.toFixed(Math.abs(v) < 10 ? 4 : 2);
  }
  // A total that leaves out calls of unknown price says how many.
  function fmtCost(v, unknown) {
    if (!unknown) return fmtUsd(v);
    return v ? `${fmtUsd(v)} + ${fmtInt(unknown)} unknown` : "cost unknown";
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms === 0) return "0 ms";
    if (ms < 1) return ms.toFixed(2) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    const minutes = Math.floor(ms / 60000);
    if (minutes < 60) return minutes + " min " + Math.round((ms % 60000) / 1000) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }
  function fmtTime(epochSeconds) {
    if (epochSeconds === null || epochSeconds === undefined) return "–";
    const d = new Date(epochSeconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }
  const pct = (used, limit) => (limit > 0 ? (100 * used) / limit : used > 0 ? Infinity : 0);
  const fmtPct = (p) => (p === Infinity ? "∞%" : p < 10 ? p.toFixed(1) + "%" : Math.round(p) + "%");

  function badge(status) {
    return h("span", { class: "badge status-" + String(status).replace(/[^a-z_]/g, "") }, status);
  }

  // Where a run sits among others: the run it was opened in (a child run), the
  // run it replays, and rows the store could not write.
  const runHref = (id) => "/runs/" + encodeURIComponent(id);
  function runMarks(run) {
    const marks = [];
    if (run.parent_run_id) marks.push(h("span", { class: "mark", "data-mark": "child" }, "↳ child of ", link(runHref(run.parent_run_id), { class: "mono" }, run.parent_run_id)));
    if (run.replay_of) marks.push(h("span", { class: "mark", "data-mark": "replay" }, "replay of ", link(runHref(run.replay_of), { class: "mono" }, run.replay_of)));
    if (run.write_errors) marks.push(h("span", { class: "mark bad", "data-mark": "write-errors", title: run.write_error || "" }, `${fmtInt(run.write_errors)} rows not stored`));
    return marks.length ? h("div", { class: "marks small muted" }, marks) : null;
  }

  // -- API -----------------------------------------------------------------------------

  async function api(path) {
    const response = await fetch(path, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      throw new Error(`${path}: HTTP ${response.status}, not JSON`);
    }
    if (!response.ok) throw new Error(body && body.message ? body.message : `HTTP ${response.status}`);
    return body;
  }
  const runPath = (id) => "/api/runs/" + encodeURIComponent(id);

  function errorBox(error) {
    return h("div", { class: "error", role: "alert" }, String(error && error.message ? error.message : error));
  }

  // -- routing -------------------------------------------------------------------------

  let pageToken = 0; // bumps on every navigation: stale async work checks it and stops
  const cleanups = [];

  function navigate(href, replace) {
    if (replace) history.replaceState(null, "", href);
    else history.pushState(null, "", href);
    route();
  }

  function link(href, props, ...children) {
    return h(
      "a",
      {
        ...props,
        href,
        onclick: (event) => {
          if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
          event.preventDefault();
          navigate(href);
        },
      },
      ...children
    );
  }

  let currentView = null; // the run page on screen, if any

  function route() {
    const path = location.pathname;
    const match = /^\/runs\/([^/]+)\/?$/.exec(path);
    const ref = match ? decodeURIComponent(match[1]) : null;
    // Only the fragment changed: the same run's page shows another object.
    if (ref !== null && currentView && currentView.alive() && currentView.runId === ref && currentView.data) {
      currentView.applyHash();
      return;
    }
    pageToken += 1;
    currentView = null;
    while (cleanups.length) cleanups.pop()();
    window.scrollTo(0, 0);
    if (match) runPage(ref, pageToken);
    else listPage(new URLSearchParams(location.search), pageToken);
  }

  function hashParams() {
    return new URLSearchParams(location.hash.slice(1));
  }
  const objectHref = (id, key, value) => runHref(id) + "#" + new URLSearchParams({ [key]: String(value) }).toString();
  function permalink(href, what) {
    return link(href, { class: "permalink", title: "link to this " + what, "aria-label": "link to this " + what }, "#");
  }

  // -- the runs list -------------------------------------------------------------------

  const SORTS = [
    ["name", "Name"],
    ["status", "Status"],
    [null, "Persona"],
    ["started", "Started"],
    ["duration", "Duration"],
    ["tokens", "Tokens"],
    ["cost", "Cost"],
  ];
  const PAGE = 50;

  async function listPage(params, token) {
    document.title = "steptrace · runs";
    const root = clear(main());
    const filters = h("form", { class: "filters card", role: "search", onsubmit: (e) => e.preventDefault() });
    const charts = h("div", { class: "charts" });
    const totals = h("p", { class: "totals", "data-testid": "totals" });
    const table = h("div", { class: "table-wrap" });
    const pager = h("nav", { class: "pager", "aria-label": "pages" });
    root.append(h("h1", {}, "Runs"), filters, charts, totals, table, pager);

    const state = {
      name: params.get("name") || "",
      status: params.get("status") || "",
      persona: params.get("persona") || "",
      sort: params.get("sort") || "started",
      order: params.get("order") || "desc",
      offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0),
    };
    const go = (changes) => {
      const next = { ...state, offset: 0, ...changes };
      const q = new URLSearchParams();
      for (const key of ["name", "status", "persona"]) if (next[key]) q.set(key, next[key]);
      if (next.sort !== "started") q.set("sort", next.sort);
      if (next.order !== "desc") q.set("order", next.order);
      if (next.offset) q.set("offset", String(next.offset));
      const query = q.toString();
      navigate("/" + (query ? "?" + query : ""), true);
    };

    api("/api/facets")
      .then((facets) => {
        if (token !== pageToken) return;
        drawFilters(filters, facets, state, go);
      })
      .catch((error) => filters.append(errorBox(error)));
    drawCharts(charts, token);

    const q = new URLSearchParams({ sort: state.sort, order: state.order, limit: String(PAGE), offset: String(state.offset) });
    for (const key of ["name", "status", "persona"]) if (state[key]) q.set(key, state[key]);
    let data;
    try {
      data = await api("/api/runs?" + q.toString());
    } catch (error) {
      if (token === pageToken) table.append(errorBox(error));
      return;
    }
    if (token !== pageToken) return;
    const t = data.totals;
    totals.append(
      h("strong", {}, fmtInt(t.runs) + (t.runs === 1 ? " run" : " runs")),
      ` · ${fmtInt(t.input_tokens)} tokens in · ${fmtInt(t.output_tokens)} out · `,
      h("strong", {}, fmtUsd(t.cost_usd)),
      ` · ${fmtInt(t.llm_calls)} LLM calls`
    );
    table.append(runsTable(data, state, go));
    const last = Math.min(data.offset + data.runs.length, data.total);
    pager.append(
      h("button", { type: "button", disabled: data.offset === 0, onclick: () => go({ ...state, offset: Math.max(0, data.offset - PAGE) }) }, "‹ Newer"),
      h("span", {}, data.total ? `${fmtInt(data.offset + 1)}–${fmtInt(last)} of ${fmtInt(data.total)}` : "no runs"),
      h("button", { type: "button", disabled: last >= data.total, onclick: () => go({ ...state, offset: data.offset + PAGE }) }, "Older ›")
    );
    root.dataset.ready = "list";
  }

  function drawFilters(form, facets, state, go) {
    const select = (label, key, values) =>
      h(
        "label",
        {},
        label,
        h(
          "select",
          { name: key, onchange: (e) => go({ ...state, [key]: e.target.value }) },
          h("option", { value: "" }, "any"),
          values.map((v) => h("option", { value: v, selected: v === state[key] }, v))
        )
      );
    const names = h("datalist", { id: "run-names" }, facets.names.map((n) => h("option", { value: n })));
    const nameInput = h("input", {
      type: "search",
      name: "name",
      list: "run-names",
      value: state.name,
      placeholder: "exact run name",
      onchange: (e) => go({ ...state, name: e.target.value.trim() }),
    });
    const statuses = Array.from(new Set(["running", "completed", "over_budget", "failed", "interrupted", ...facets.statuses]));
    form.append(
      select("Status", "status", statuses),
      h("label", {}, "Name", nameInput, names),
      select("Persona", "persona", facets.personas),
      h("button", { type: "button", class: "secondary", onclick: () => go({ name: "", status: "", persona: "" }) }, "Clear")
    );
  }

  function runsTable(data, state, go) {
    const head = h(
      "tr",
      {},
      SORTS.map(([key, label]) => {
        if (!key) return h("th", { scope: "col" }, label);
        const active = state.sort === key;
        const next = active && state.order === "desc" ? "asc" : "desc";
        return h(
          "th",
          { scope: "col", "aria-sort": active ? (state.order === "desc" ? "descending" : "ascending") : "none" },
          h(
            "button",
            { type: "button", class: "sort" + (active ? " active" : ""), "data-sort": key, onclick: () => go({ ...state, sort: key, order: next }) },
            label,
            active ? (state.order === "desc" ? " ▾" : " ▴") : ""
          )
        );
      })
    );
    const rows = data.runs.map((run) =>
      h(
        "tr",
        { "data-run-id": run.id },
        h("td", {}, link("/runs/" + encodeURIComponent(run.id), { class: "run-link" }, run.name), h("div", { class: "muted small mono" }, run.id), runMarks(run)),
        h("td", {}, badge(run.status)),
        h("td", {}, (run.personas || []).join(", ") || "–"),
        h("td", { class: "nowrap" }, fmtTime(run.started_at)),
        h("td", { class: "num" }, run.duration_ms === null ? (run.status === "running" ? "running" : "–") : fmtMs(run.duration_ms)),
        h("td", { class: "num", title: `${fmtInt(run.input_tokens)} in, ${fmtInt(run.output_tokens)} out` }, fmtInt(run.input_tokens + run.output_tokens)),
        h("td", { class: "num" }, fmtUsd(run.cost_usd))
      )
    );
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: SORTS.length, class: "muted" }, "No runs match.")));
    return h("table", { class: "runs" }, h("thead", {}, head), h("tbody", {}, rows));
  }

  async function drawCharts(box, token) {
    const card = (title, body) => h("section", { class: "card chart" }, h("h2", {}, title), body);
    const modelBody = h("div", {}, h("p", { class: "muted" }, "…"));
    const dayBody = h("div", {}, h("p", { class: "muted" }, "…"));
    box.append(card("Cost by model (all runs)", modelBody), card("Cost by day (all runs)", dayBody));
    try {
      const [models, days] = await Promise.all([api("/api/aggregates?by=model"), api("/api/aggregates?by=day")]);
      if (token !== pageToken) return;
      clear(modelBody).append(barChart(models.rows));
      clear(dayBody).append(dayChart(days.rows));
    } catch (error) {
      clear(modelBody).append(errorBox(error));
    }
  }

  function barChart(rows) {
    if (!rows.length) return h("p", { class: "muted" }, "No LLM calls yet.");
    const top = rows.slice(0, 8);
    if (rows.length > 8) {
      const rest = rows.slice(8);
      top.push({ key: `${rest.length} more`, cost_usd: rest.reduce((a, r) => a + r.cost_usd, 0), llm_calls: rest.reduce((a, r) => a + r.llm_calls, 0) });
    }
    const max = Math.max(...top.map((r) => r.cost_usd), 1e-12);
    const rowH = 22, labelW = 150, barW = 220, width = labelW + barW + 80;
    const svg = s("svg", { class: "chart-svg", viewBox: `0 0 ${width} ${top.length * rowH + 4}`, role: "img", "aria-label": "cost by model" });
    top.forEach((r, i) => {
      const y = i * rowH + 2;
      const w = Math.max(1, (barW * r.cost_usd) / max);
      const label = r.key === null ? "(none)" : String(r.key);
      svg.append(
        s("g", { class: "bar-row" },
          s("title", {}, `${label}: ${fmtUsd(r.cost_usd)}, ${fmtInt(r.llm_calls)} calls`),
          s("text", { x: labelW - 6, y: y + 14, "text-anchor": "end", class: "chart-label" }, label.length > 22 ? label.slice(0, 21) + "…" : label),
          s("rect", { x: labelW, y: y + 3, width: w, height: rowH - 8, rx: 2, class: "chart-bar" }),
          s("text", { x: labelW + w + 6, y: y + 14, class: "chart-value" }, fmtUsd(r.cost_usd)))
      );
    });
    return svg;
  }

  function dayChart(rows) {
    if (!rows.length) return h("p", { class: "muted" }, "No LLM calls yet.");
    const days = rows.slice(-30);
    const max = Math.max(...days.map((r) => r.cost_usd), 1e-12);
    const width = 440, height = 150, base = 124, top = 16;
    const step = width / days.length, barW = Math.max(2, Math.min(28, step * 0.7));
    const svg = s("svg", { class: "chart-svg", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "cost by day" });
    svg.append(s("line", { x1: 0, x2: width, y1: base, y2: base, class: "chart-axis" }));
    days.forEach((r, i) => {
      const barH = Math.max(1, ((base - top) * r.cost_usd) / max);
      const x = i * step + (step - barW) / 2;
      svg.append(
        s("g", { class: "bar-row" },
          s("title", {}, `${r.key}: ${fmtUsd(r.cost_usd)}, ${fmtInt(r.llm_calls)} calls`),
          s("rect", { x, y: base - barH, width: barW, height: barH, rx: 2, class: "chart-bar" }))
      );
    });
    const labels = days.length === 1 ? [0] : [0, days.length - 1];
    for (const i of labels) {
      svg.append(s("text", { x: Math.min(width - 4, Math.max(4, i * step + step / 2)), y: base + 16, "text-anchor": days.length === 1 ? "middle" : i === 0 ? "start" : "end", class: "chart-label" }, String(days[i].key)));
    }
    svg.append(s("text", { x: 4, y: 11, class: "chart-value" }, "max " + fmtUsd(max)));
    return svg;
  }

  // -- one run -------------------------------------------------------------------------

  const LEAF = new Set(["llm_call", "tool"]);
  const STEP_STATUSES = ["completed", "failed", "skipped", "escalated"];

  async function runPage(runId, token) {
    document.title = "steptrace · run " + runId;
    const root = clear(main());
    root.append(h("nav", { class: "crumbs" }, link("/", {}, "Runs"), " / ", h("span", { class: "mono" }, runId)));
    let data;
    try {
      data = await api(runPath(runId));
    } catch (error) {
      if (token === pageToken) root.append(errorBox(error));
      return;
    }
    if (token !== pageToken) return;
    document.title = "steptrace · " + data.run.name;
    if (data.run.id !== runId) {
      // `last`, a prefix or a name: the address names the run itself from now on.
      history.replaceState(null, "", runHref(data.run.id) + location.hash);
      clear(root).append(h("nav", { class: "crumbs" }, link("/", {}, "Runs"), " / ", h("span", { class: "mono nowrap" }, data.run.id)));
    }
    const view = new RunView(data.run.id, token, root);
    currentView = view;
    view.load(data);
    view.applyHash();
  }

  class RunView {
    constructor(runId, token, root) {
      this.runId = runId;
      this.token = token;
      this.root = root;
      this.expanded = new Set();
      this.nodes = new Map();
      this.selectedTypes = null; // null: every type
      this.head = h("section", { class: "card run-head", "data-testid": "run-head" });
      this.treeBox = h("ul", { class: "tree", role: "tree", "data-testid": "tree" });
      this.summaryBox = h("div", { class: "summary", "data-testid": "summary" });
      this.timelineBox = h("div", { class: "timeline", "data-testid": "timeline" });
      this.eventsBox = h("div", { class: "events", "data-testid": "events" });
      this.callsBox = h("div", { class: "calls", "data-testid": "calls" });
      // A side panel over the page: it opens where the reader is, not below the table.
      this.callDetail = h("aside", { class: "card call-detail", "data-testid": "call-detail", role: "dialog", "aria-label": "LLM call", hidden: true });
      this.searchBox = h("section", { class: "card search", "data-testid": "search" });
      this.wholeTimeline = false;
      const section = (title, testid, ...body) => h("section", { class: "card", "data-section": testid }, h("h2", {}, title), ...body);
      this.treeTools = h("div", { class: "tools" },
        h("button", { type: "button", class: "secondary", onclick: () => this.expandAll(true) }, "Expand all"),
        h("button", { type: "button", class: "secondary", onclick: () => this.expandAll(false) }, "Collapse all"));
      const onKey = (event) => {
        if (event.key === "Escape" && !this.callDetail.hidden) this.closeCall();
      };
      document.addEventListener("keydown", onKey);
      cleanups.push(() => document.removeEventListener("keydown", onKey));
      root.append(
        this.head,
        this.searchBox,
        h("div", { class: "grid" },
          h("section", { class: "card tree-card", "data-section": "tree" }, h("div", { class: "card-title" }, h("h2", {}, "Steps"), this.treeTools), this.treeBox),
          section("Summary", "summary", this.summaryBox)),
        section("Timeline", "timeline", this.timelineBox),
        section("Events", "events", this.eventsBox),
        section("LLM calls", "calls", this.callsBox),
        this.callDetail
      );
    }

    alive() {
      return this.token === pageToken;
    }

    load(data) {
      this.data = data;
      this.index(data);
      this.drawHead();
      this.drawTree();
      this.drawTimeline();
      this.drawSummary(null);
      if (!this.events) this.events = new EventList(this);
      this.events.reset(data.event_counts);
      this.loadCalls(0);
      this.loadSummary();
      if (data.run.status === "running") this.startLive();
    }

    // Spans by id, tree children, and each step's budget use (its subtree).
    index(data) {
      const nodes = new Map();
      for (const span of data.spans) nodes.set(span.id, { span, children: [], fetched: [], fetchedTotal: null, depth: 0 });
      const ledger = new Map(data.ledger.map((row) => [row.span_id, row]));
      this.roots = [];
      for (const node of nodes.values()) {
        node.ledger = ledger.get(node.span.id) || null;
        const parent = node.span.parent_id === null ? null : nodes.get(node.span.parent_id);
        if (parent) parent.children.push(node);
        else this.roots.push(node);
      }
      const total = (node, depth) => {
        node.depth = depth;
        const m = node.span.metadata || {};
        let tokens = 0, usd = 0;
        if (node.span.kind === "step") {
          tokens = (m.input_tokens || 0) + (m.output_tokens || 0);
          usd = m.cost_usd || 0;
        }
        for (const child of node.children) {
          const [t, u] = total(child, depth + 1);
          tokens += t;
          usd += u;
        }
        node.subtreeTokens = tokens;
        node.subtreeUsd = usd;
        return [tokens, usd];
      };
      this.roots.forEach((r) => total(r, 0));
      this.nodes = nodes;
      if (!this.expandedOnce) {
        for (const node of nodes.values()) if (node.span.kind === "run" || node.span.kind === "persona") this.expanded.add(node.span.id);
        this.expandedOnce = true;
      }
    }

    spanName(id) {
      const node = id === null ? null : this.nodes.get(id);
      return node ? node.span.name : null;
    }

    // -- header -------------------------------------------------------------------------

    drawHead() {
      const run = this.data.run;
      const head = clear(this.head);
      this.liveBadge = h("span", { class: "live", hidden: run.status !== "running" }, "live");
      const facts = [
        ["Started", fmtTime(run.started_at)],
        ["Duration", run.duration_ms === null ? "still running" : fmtMs(run.duration_ms)],
        ["LLM calls", fmtInt(run.llm_calls)],
        ["Tokens", `${fmtInt(run.input_tokens)} in · ${fmtInt(run.output_tokens)} out`],
        ["Cost", h("span", { "data-testid": "run-cost" }, fmtCost(run.cost_usd, run.unpriced_calls))],
        ["Personas", (run.personas || []).join(", ") || "–"],
        ["Events", fmtInt(this.data.event_total)],
        ["Spans", fmtInt(this.data.span_count)],
      ];
      if (run.host) facts.push(["Process", `${run.host} pid ${run.pid ?? "?"}`]);
      const parent = this.data.parent;
      if (run.parent_run_id) facts.push(["Parent run", link(runHref(run.parent_run_id), { "data-testid": "parent-run" }, parent ? parent.name : run.parent_run_id)]);
      if (run.replay_of) facts.push(["Replay of", link(runHref(run.replay_of), { class: "mono" }, run.replay_of)]);
      if (run.write_errors) facts.push(["Not stored", h("span", { class: "bad", title: run.write_error || "" }, `${fmtInt(run.write_errors)} rows: ${run.write_error || ""}`)]);
      head.append(
        h("h1", {}, run.name, " ", badge(run.status), " ", this.liveBadge),
        h("p", { class: "run-id-line muted" }, "Run ", h("span", { class: "mono run-id", "data-testid": "run-id" }, run.id), " ", permalink(runHref(run.id), "run")),
        h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))
      );
      const children = this.data.child_runs || [];
      if (children.length) {
        head.append(
          h("div", { class: "child-runs", "data-testid": "child-runs" },
            h("h2", {}, "Child runs"),
            h("ul", {}, children.map((child) => h("li", { "data-run-id": child.id },
              link(runHref(child.id), { class: "run-link" }, child.name), " ", badge(child.status),
              h("span", { class: "muted small" }, ` ${fmtInt(child.input_tokens + child.output_tokens)} tokens · ${fmtCost(child.cost_usd, child.unpriced_calls)}`)))))
        );
      }
      const budget = run.budget || {};
      const bars = budgetBars(
        { tokens: run.input_tokens + run.output_tokens, usd: run.cost_usd },
        { max_tokens: budget.max_tokens, max_usd: budget.max_usd },
        [],
        run.status === "running" ? "running" : run.status === "completed" ? "completed" : "failed"
      );
      if (bars) head.append(h("div", { class: "run-budget" }, h("span", { class: "muted" }, "Run budget"), bars));
      if (Object.keys(run.metadata || {}).length) head.append(h("details", {}, h("summary", {}, "Metadata"), h("pre", {}, JSON.stringify(run.metadata, null, 2))));
      if (run.error) head.append(h("pre", { class: "error" }, run.error));
    }

    // -- the step tree ------------------------------------------------------------------

    drawTree() {
      const tree = clear(this.treeBox);
      if (!this.roots.length) tree.append(h("li", { class: "muted" }, "No spans stored."));
      for (const node of this.roots) tree.append(this.treeNode(node));
      if (this.data.truncated) tree.append(h("li", { class: "muted" }, "More steps than the portal draws; the first ones are shown."));
      this.treeBox.dataset.ready = "1";
    }

    expandAll(open) {
      for (const node of this.nodes.values()) {
        if (LEAF.has(node.span.kind)) continue;
        if (open) this.expanded.add(node.span.id);
        else this.expanded.delete(node.span.id);
      }
      this.drawTree();
    }

    treeNode(node) {
      const span = node.span;
      const leafCount = span.leaf_count || 0;
      const knownLeaves = node.children.filter((c) => LEAF.has(c.span.kind)).length;
      const hasChildren = node.children.length > 0 || leafCount > 0;
      const open = this.expanded.has(span.id);
      const li = h("li", { class: "node kind-" + span.kind, role: "treeitem", "data-span-id": span.id, "data-kind": span.kind, "aria-expanded": hasChildren ? String(open) : null });
      const toggle = hasChildren
        ? h("button", { type: "button", class: "toggle", "aria-label": (open ? "collapse " : "expand ") + span.name, onclick: () => this.toggle(node) }, open ? "▾" : "▸")
        : h("span", { class: "toggle-spacer" });
      li.append(this.nodeRow(node, toggle));
      if (hasChildren && open) {
        const group = h("ul", { role: "group" });
        for (const child of node.children) group.append(this.treeNode(child));
        // Leaf spans not in the structure come in pages from the server.
        const shownIds = new Set(node.children.map((c) => c.span.id));
        for (const leaf of node.fetched) if (!shownIds.has(leaf.span.id)) group.append(this.treeNode(leaf));
        const loaded = knownLeaves + node.fetched.filter((l) => !shownIds.has(l.span.id)).length;
        if (loaded < leafCount) {
          const more = h("button", { type: "button", class: "secondary more", onclick: () => this.fetchLeaves(node) }, `Show ${fmtInt(Math.min(100, leafCount - loaded))} more of ${fmtInt(leafCount - loaded)} calls and tools`);
          group.append(h("li", { class: "node" }, more));
          if (node.fetched.length === 0 && !node.fetching) this.fetchLeaves(node);
        }
        li.append(group);
      }
      return li;
    }

    nodeRow(node, toggle) {
      const span = node.span;
      const m = span.metadata || {};
      const ctx = span.context || {};
      const duration = span.end_ms === null ? null : span.end_ms - span.start_ms;
      const status = span.kind === "step" && m.status ? m.status : span.kind === "run" || span.kind === "persona" ? m.status || span.status : span.status;
      const label = span.kind === "llm_call"
        ? link(objectHref(this.runId, "call", span.id), { class: "name call-link" }, span.name)
        : h("span", { class: "name" }, span.name);
      const row = h("div", { class: "row" }, toggle, h("span", { class: "kind" }, span.kind.replace("_", " ")), label, badge(status), permalink(objectHref(this.runId, "span", span.id), span.kind.replace("_", " ")));
      const metrics = [];
      if (span.kind === "llm_call") {
        metrics.push(`${fmtInt(m["gen_ai.usage.input_tokens"])} in / ${fmtInt(m["gen_ai.usage.output_tokens"])} out`);
        if (m["steptrace.cost_usd"] !== undefined) metrics.push(fmtUsd(m["steptrace.cost_usd"]));
      } else if (span.kind === "step" || span.kind === "persona" || span.kind === "run") {
        const tokens = span.kind === "step" ? node.subtreeTokens : (m.input_tokens || 0) + (m.output_tokens || 0);
        metrics.push(`${fmtInt(tokens)} tokens`, fmtCost(span.kind === "step" ? node.subtreeUsd : m.cost_usd || 0, m.unpriced_calls));
      }
      metrics.push(fmtMs(duration));
      row.append(h("span", { class: "metrics muted" }, metrics.join(" · ")));
      if (span.kind === "step" || span.kind === "persona") {
        const limits = {
          max_tokens: ctx.max_tokens ?? (node.ledger && node.ledger.max_tokens),
          max_usd: ctx.max_usd ?? (node.ledger && node.ledger.max_usd),
        };
        const used = span.kind === "step"
          ? { tokens: node.subtreeTokens, usd: node.subtreeUsd }
          : { tokens: (m.input_tokens || 0) + (m.output_tokens || 0), usd: m.cost_usd || 0 };
        const thresholds = ctx.thresholds || m.budget_thresholds || [];
        const bars = budgetBars(used, limits, thresholds, status);
        if (bars) row.append(bars);
        else if (span.kind === "step") row.append(h("span", { class: "muted small no-budget" }, "no budget"));
      }
      const wrap = h("div", { class: "row-wrap" }, row);
      if (span.error) wrap.append(h("div", { class: "span-error" }, span.error));
      return wrap;
    }

    toggle(node) {
      if (this.expanded.has(node.span.id)) this.expanded.delete(node.span.id);
      else this.expanded.add(node.span.id);
      this.drawTree();
    }

    async fetchLeaves(node) {
      if (node.fetching) return;
      node.fetching = true;
      try {
        const page = await api(`${runPath(this.runId)}/spans/${node.span.id}/children?leaves=1&limit=100&offset=${node.fetched.length}`);
        if (!this.alive()) return;
        for (const span of page.spans) node.fetched.push({ span, children: [], fetched: [], depth: node.depth + 1, ledger: null, subtreeTokens: 0, subtreeUsd: 0 });
      } catch (error) {
        this.treeBox.append(h("li", {}, errorBox(error)));
        return;
      } finally {
        node.fetching = false;
      }
      this.drawTree();
    }

    // -- waterfall ----------------------------------------------------------------------

    drawTimeline() {
      const box = clear(this.timelineBox);
      const rows = [];
      const walk = (node) => {
        rows.push(node);
        for (const child of node.children) walk(child);
      };
      this.roots.forEach(walk);
      const MAX_ROWS = 400;
      const shown = rows.slice(0, MAX_ROWS);
      if (!shown.length) {
        box.append(h("p", { class: "muted" }, "No spans stored."));
        return;
      }
      const end = Math.max(...shown.map((n) => (n.span.end_ms === null ? n.span.start_ms : n.span.end_ms)), 0.001);
      const runStart = Math.min(0, ...shown.map((n) => n.span.start_ms));
      // The script's start-up (before its first step or span) can be most of a
      // short run: the timeline starts where the work starts, unless asked not to.
      const WORK = new Set(["step", "llm_call", "tool", "custom"]);
      const work = shown.filter((n) => WORK.has(n.span.kind)).map((n) => n.span.start_ms);
      const workStart = work.length ? Math.min(...work) : runStart;
      const skippable = workStart - runStart > 0.1 * (end - runStart);
      const start = skippable && !this.wholeTimeline ? workStart : runStart;
      const range = end - start || 1;
      box.dataset.start = String(start);
      if (skippable) {
        box.append(
          h("div", { class: "wf-note muted small" },
            this.wholeTimeline
              ? `The first ${fmtMs(workStart - runStart)} are the script starting up. `
              : `Starts at the first step, ${fmtMs(workStart - runStart)} after the run began (the script starting up). `,
            h("button", { type: "button", class: "secondary small", "data-testid": "timeline-range", onclick: () => { this.wholeTimeline = !this.wholeTimeline; this.drawTimeline(); } },
              this.wholeTimeline ? "Start at the first step" : "Show the whole run"))
        );
      }
      const axis = h("div", { class: "wf-axis" }, h("span", { class: "wf-label" }));
      const ticks = h("div", { class: "wf-track" });
      for (const f of [0, 0.25, 0.5, 0.75, 1]) {
        const tick = h("span", { class: "wf-tick" }, fmtMs(start + f * range));
        tick.style.left = f * 100 + "%";
        ticks.append(tick);
      }
      axis.append(ticks);
      box.append(axis);
      for (const node of shown) {
        const span = node.span;
        const spanEnd = span.end_ms === null ? end : span.end_ms;
        const bar = h("span", { class: "wf-bar kind-" + span.kind + (span.status === "error" ? " is-error" : "") });
        const from = Math.max(span.start_ms, start);
        bar.style.left = ((from - start) / range) * 100 + "%";
        bar.style.width = `max(2px, ${((spanEnd - from) / range) * 100}%)`;
        const label = h("span", { class: "wf-label", title: span.name }, span.name);
        label.style.paddingLeft = Math.min(node.depth, 8) * 12 + 4 + "px";
        const row = h(
          "div",
          { class: "wf-row", "data-span-id": span.id, title: `${span.name} (${span.kind}): starts at ${fmtMs(span.start_ms - start)}, takes ${fmtMs(spanEnd - span.start_ms)}` },
          label,
          h("span", { class: "wf-track" }, bar)
        );
        if (span.kind === "llm_call") {
          row.classList.add("clickable");
          row.addEventListener("click", () => navigate(objectHref(this.runId, "call", span.id)));
        }
        box.append(row);
      }
      const hidden = this.data.complete ? rows.length - shown.length : this.data.span_count - shown.length;
      if (hidden > 0) {
        box.append(h("p", { class: "muted small" }, `${fmtInt(hidden)} more spans (LLM calls and tools) are not drawn here: open a step in the tree to list them.`));
      }
    }

    // -- summary ------------------------------------------------------------------------

    async loadSummary() {
      try {
        const summary = await api(`${runPath(this.runId)}/summary`);
        if (this.alive()) this.drawSummary(summary);
      } catch (error) {
        if (this.alive()) this.summaryBox.append(errorBox(error));
      }
    }

    drawSummary(summary) {
      const box = clear(this.summaryBox);
      const steps = summary ? summary.steps : this.data.steps;
      box.append(
        h("div", { class: "chips" }, STEP_STATUSES.map((st) => h("span", { class: "chip status-" + st, "data-step-status": st }, `${steps[st] || 0} ${st}`)))
      );
      if (!summary) {
        box.append(h("p", { class: "muted" }, "Summing the agent events…"));
        return;
      }
      const agent = summary.agent || {};
      const loops = agent.loops || [];
      const outside = (agent.outside_loops || {}).llm_calls || 0;
      // Calls too quick to time (scripted, replayed) record 0 ms each.
      const time = (ms, n) => (n && !ms ? "under 1 ms" : fmtMs(ms));
      const rows = [
        ["Agent loops", loops.length > 1 ? `${loops.length} (figures: all of them together)` : String(loops.length)],
        ["Agent status", agent.status],
        ["Iterations", fmtInt(agent.iterations)],
        ["LLM calls", fmtInt(agent.llm_calls) + (outside ? ` (${fmtInt(outside)} outside any loop)` : "")],
        ["Tool executions", fmtInt(agent.tool_executions)],
        ["Tool rejections", fmtInt(agent.tool_rejections)],
        ["Loop interventions", fmtInt(agent.interventions)],
        ["Compactions", fmtInt(agent.compactions)],
        ["Agent tokens", `${fmtInt(agent.total_input_tokens)} in · ${fmtInt(agent.total_output_tokens)} out`],
        ["LLM time", time(agent.total_llm_duration_ms, agent.llm_calls)],
        ["Tool time", time(agent.total_tool_duration_ms, agent.tool_executions)],
        ["Tools used", (agent.tools_used || []).join(", ") || "–"],
      ];
      box.append(h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")])));
      if (loops.length > 1) {
        box.append(
          h("div", { class: "loops-wrap" },
            h("table", { class: "loops", "data-testid": "loops" },
              h("thead", {}, h("tr", {}, ["Loop", "Status", "Iter.", "Calls", "Tools"].map((t) => h("th", { scope: "col" }, t)))),
              h("tbody", {}, loops.map((loop, i) =>
                h("tr", { title: `${fmtInt(loop.total_input_tokens)} tokens in, ${fmtInt(loop.total_output_tokens)} out; ${loop.tool_rejections} rejections, ${loop.interventions} interventions, ${loop.compactions} compactions` },
                  h("td", { "data-loop": String(i) }, String(i + 1)),
                  h("td", {}, badge(loop.status)),
                  h("td", { class: "num" }, fmtInt(loop.iterations)),
                  h("td", { class: "num" }, fmtInt(loop.llm_calls)),
                  h("td", { class: "num" }, fmtInt(loop.tool_executions)))))))
        );
        this.nameLoops(box);
      }
      box.dataset.ready = "1";
    }

    // Each ended loop is named by the span its LoopComplete was emitted in.
    async nameLoops(box) {
      let page;
      try {
        page = await api(`${runPath(this.runId)}/events?types=loop_complete&limit=1000`);
      } catch (error) {
        return; // the numbers stand without the names
      }
      if (!this.alive()) return;
      page.events.forEach((event, i) => {
        const cell = box.querySelector(`td[data-loop="${i}"]`);
        const name = this.spanName(event.span_id);
        if (cell && name) cell.append(" ", h("span", { class: "loop-name" }, name));
      });
    }

    // -- LLM calls ----------------------------------------------------------------------

    async loadCalls(offset) {
      const box = this.callsBox;
      let page;
      try {
        page = await api(`${runPath(this.runId)}/llm-calls?limit=50&offset=${offset}`);
      } catch (error) {
        if (this.alive()) clear(box).append(errorBox(error));
        return;
      }
      if (!this.alive()) return;
      this.callsOffset = offset;
      clear(box);
      if (!page.total) {
        box.append(h("p", { class: "muted" }, "No LLM calls."));
        return;
      }
      const rows = page.calls.map((call, i) =>
        h(
          "tr",
          { class: "clickable", "data-span-id": call.span_id, tabindex: "0", onclick: () => navigate(objectHref(this.runId, "call", call.span_id)), onkeydown: (e) => { if (e.key === "Enter") navigate(objectHref(this.runId, "call", call.span_id)); } },
          h("td", { class: "num" }, link(objectHref(this.runId, "call", call.span_id), { class: "call-number" }, String(offset + i + 1))),
          h("td", {}, this.spanName(call.parent_id) || "–"),
          h("td", {}, call.model || "–"),
          h("td", { class: "num" }, fmtInt(call.input_tokens)),
          h("td", { class: "num" }, fmtInt(call.output_tokens)),
          h("td", { class: "num" }, fmtUsd(call.cost_usd)),
          h("td", { class: "num" }, fmtMs(call.duration_ms)),
          h("td", {}, badge(call.status))
        )
      );
      box.append(
        h("table", { class: "llm-calls" },
          h("thead", {}, h("tr", {}, ["#", "Step", "Model", "In", "Out", "Cost", "Time", "Status"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows))
      );
      if (page.total > 50) {
        const last = Math.min(offset + 50, page.total);
        box.append(
          h("nav", { class: "pager" },
            h("button", { type: "button", disabled: offset === 0, onclick: () => this.loadCalls(Math.max(0, offset - 50)) }, "‹ Earlier"),
            h("span", {}, `${fmtInt(offset + 1)}–${fmtInt(last)} of ${fmtInt(page.total)}`),
            h("button", { type: "button", disabled: last >= page.total, onclick: () => this.loadCalls(offset + 50) }, "Later ›"))
        );
      }
      box.dataset.ready = "1";
    }

    async openCall(spanId, needle) {
      const panel = this.callDetail;
      // Only the latest click may fill the panel: answers can arrive out of order.
      const ticket = (this.callTicket = (this.callTicket || 0) + 1);
      panel.hidden = false;
      delete panel.dataset.ready;
      clear(panel).append(h("h2", {}, "LLM call"), h("p", { class: "muted" }, "Loading…"));
      let data;
      try {
        data = await api(`${runPath(this.runId)}/llm-calls/${encodeURIComponent(spanId)}`);
      } catch (error) {
        if (this.alive() && ticket === this.callTicket) {
          clear(panel).append(h("h2", {}, "LLM call"), errorBox(error));
        }
        return;
      }
      if (!this.alive() || ticket !== this.callTicket) return;
      const call = data.call;
      clear(panel);
      panel.dataset.spanId = call.span_id;
      panel.append(
        h("div", { class: "card-title" },
          h("h2", {}, `LLM call · ${call.model || call.name}`),
          h("span", { class: "tools" },
            link(objectHref(this.runId, "call", call.span_id), { class: "secondary button-link", "data-testid": "call-link" }, "Link"),
            h("button", { type: "button", class: "secondary", onclick: () => this.closeCall() }, "Close"))),
        h("dl", { class: "facts" },
          [
            ["Step", this.spanName(call.parent_id) || "–"],
            ["Tokens", `${fmtInt(call.input_tokens)} in · ${fmtInt(call.output_tokens)} out` + (call.cache_read_tokens ? ` · ${fmtInt(call.cache_read_tokens)} cached` : "")],
            ["Cost", fmtUsd(call.cost_usd)],
            ["Duration", fmtMs(call.duration_ms)],
            ["Status", badge(call.status)],
            ["Finish", (call.finish_reasons || []).join(", ") || "–"],
            ["Iteration", call.iteration ?? "–"],
            ["Provider", call.system || "–"],
          ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))
      );
      if (call.error) panel.append(h("pre", { class: "error" }, call.error));
      const transcript = data.transcript;
      if (!transcript || (!transcript.request && !transcript.response)) {
        panel.append(h("p", { class: "muted", "data-testid": "no-content" }, "No prompt or response stored for this call (content capture was off)."));
        return;
      }
      const request = transcript.request || {};
      const prompt = h("div", { class: "prompt", "data-testid": "prompt" });
      for (const message of request.messages || []) {
        const parts = [h("div", { class: "role" }, message.role + (message.tool_call_id ? ` (result of ${message.tool_call_id})` : ""))];
        if (message.content) parts.push(h("pre", { class: "content" }, String(message.content)));
        for (const tc of message.tool_calls || []) parts.push(h("pre", { class: "tool-call" }, `→ ${tc.name}(${JSON.stringify(tc.arguments)})  [${tc.id}]`));
        prompt.append(h("div", { class: "message role-" + String(message.role).replace(/[^a-z]/g, "") }, parts));
      }
      const settings = [];
      if (request.max_tokens !== null && request.max_tokens !== undefined) settings.push(`max_tokens ${request.max_tokens}`);
      if (request.temperature !== null && request.temperature !== undefined) settings.push(`temperature ${request.temperature}`);
      const tools = (request.tools || []).map((t) => t.name);
      panel.append(
        h("div", {},
          h("h3", {}, "Prompt"),
          settings.length ? h("p", { class: "muted small" }, settings.join(" · ")) : null,
          tools.length ? h("p", { class: "muted small" }, "Tools offered: " + tools.join(", ")) : null,
          prompt)
      );
      const response = transcript.response || {};
      const answer = h("div", { class: "response", "data-testid": "response" });
      if (response.text) answer.append(h("pre", { class: "content" }, String(response.text)));
      for (const tc of response.tool_calls || []) answer.append(h("pre", { class: "tool-call" }, `→ ${tc.name}(${JSON.stringify(tc.arguments)})  [${tc.id}]`));
      if (!response.text && !(response.tool_calls || []).length) answer.append(h("p", { class: "muted" }, "(empty response)"));
      panel.append(h("h3", {}, "Response"), answer);
      if (needle) {
        const first = markText(panel, needle);
        if (first) first.scrollIntoView({ block: "center" });
      }
      panel.dataset.ready = "1";
    }

    closeCall() {
      this.callDetail.hidden = true;
      this.callTicket = (this.callTicket || 0) + 1;
      const params = hashParams();
      if (params.has("call")) {
        params.delete("call");
        const rest = params.toString();
        navigate(runHref(this.runId) + (rest ? "#" + rest : ""));
      }
    }

    // -- addresses ----------------------------------------------------------------------

    // Show what the address's fragment names (see the header comment).
    applyHash() {
      const params = hashParams();
      const q = params.get("q");
      if (q && q !== this.searchText) this.search(q, false);
      else if (!q && this.searchText === undefined) this.drawSearch("");
      const call = params.get("call");
      if (call) this.openCall(call, q || null);
      else if (!this.callDetail.hidden) {
        this.callDetail.hidden = true;
        this.callTicket = (this.callTicket || 0) + 1;
      }
      const spanId = params.get("span");
      if (spanId) this.revealSpan(spanId);
      const seq = params.get("event");
      if (seq !== null && /^\d+$/.test(seq)) this.events.focus(Number(seq));
    }

    revealSpan(spanId) {
      const node = this.nodes.get(spanId);
      if (!node) {
        this.treeBox.append(h("li", { class: "muted", "data-testid": "span-missing" }, `Span ${spanId} is not among the steps drawn here.`));
        return;
      }
      for (let up = node.span.parent_id; up !== null && this.nodes.has(up); up = this.nodes.get(up).span.parent_id) this.expanded.add(up);
      this.drawTree();
      const el = this.treeBox.querySelector(`li[data-span-id="${CSS.escape(spanId)}"]`);
      if (el) {
        el.classList.add("highlight");
        el.scrollIntoView({ block: "center" });
      }
    }

    // -- search -------------------------------------------------------------------------

    drawSearch(text) {
      const box = clear(this.searchBox);
      const input = h("input", { type: "search", name: "q", value: text, "aria-label": "search in this run", placeholder: "Search this run: prompts, responses, tool arguments, errors…", maxlength: "200" });
      const form = h("form", { role: "search", class: "search-form", onsubmit: (e) => { e.preventDefault(); const q = input.value.trim(); if (q) navigate(objectHref(this.runId, "q", q)); } },
        input, h("button", { type: "submit" }, "Search"));
      this.searchResults = h("div", { class: "search-results", "data-testid": "search-results" });
      box.append(form, this.searchResults);
      return input;
    }

    async search(text, push) {
      this.searchText = text;
      this.drawSearch(text);
      const results = this.searchResults;
      results.append(h("p", { class: "muted" }, "Searching…"));
      let data;
      try {
        data = await api(`${runPath(this.runId)}/search?q=${encodeURIComponent(text)}&limit=200`);
      } catch (error) {
        if (this.alive() && this.searchText === text) clear(results).append(errorBox(error));
        return;
      }
      if (!this.alive() || this.searchText !== text) return;
      this.hits = data.hits;
      this.hitIndex = -1;
      clear(results);
      if (!data.hits.length) {
        results.append(h("p", { class: "muted" }, `Nothing in this run matches “${text}”.`));
        results.dataset.ready = "1";
        return;
      }
      this.hitCounter = h("span", { class: "muted small", "data-testid": "hit-counter" }, `${fmtInt(data.hits.length)}${data.more ? "+" : ""} matches`);
      results.append(
        h("div", { class: "search-nav" },
          this.hitCounter,
          h("button", { type: "button", class: "secondary", "data-testid": "previous-hit", onclick: () => this.showHit(this.hitIndex - 1) }, "‹ Previous"),
          h("button", { type: "button", class: "secondary", "data-testid": "next-hit", onclick: () => this.showHit(this.hitIndex + 1) }, "Next ›")),
        h("ol", { class: "hits" }, data.hits.map((hit, i) =>
          h("li", { "data-hit": String(i), "data-kind": hit.kind },
            h("button", { type: "button", class: "hit", onclick: () => this.showHit(i) },
              h("span", { class: "badge kind-" + hit.kind }, hit.kind.replace("_", " ")),
              h("span", { class: "where muted small" }, this.hitPlace(hit)),
              h("span", { class: "snippet" }, highlighted(hit.snippet, text))))))
      );
      results.dataset.ready = "1";
    }

    hitPlace(hit) {
      if (hit.seq !== null) return `event #${hit.seq}`;
      const name = this.spanName(hit.span_id);
      return (name || (hit.span_id ? "span " + hit.span_id : "run")) + " · " + hit.path;
    }

    showHit(i) {
      if (!this.hits || !this.hits.length) return;
      const n = this.hits.length;
      this.hitIndex = ((i % n) + n) % n;
      const hit = this.hits[this.hitIndex];
      for (const el of this.searchResults.querySelectorAll("li[data-hit]")) el.classList.toggle("current", el.dataset.hit === String(this.hitIndex));
      if (this.hitCounter) this.hitCounter.textContent = `match ${fmtInt(this.hitIndex + 1)} of ${fmtInt(n)}`;
      const q = this.searchText;
      const onCall = ["prompt", "response", "tool_arguments", "tool_result"].includes(hit.kind);
      let href;
      if (hit.seq !== null) href = runHref(this.runId) + "#" + new URLSearchParams({ event: String(hit.seq), q });
      else if (onCall) href = runHref(this.runId) + "#" + new URLSearchParams({ call: hit.span_id, q });
      else if (hit.span_id) href = runHref(this.runId) + "#" + new URLSearchParams({ span: hit.span_id, q });
      else {
        const error = this.head.querySelector("pre.error");
        if (error) error.scrollIntoView({ block: "center" });
        return;
      }
      navigate(href);
    }

    // -- live updates -------------------------------------------------------------------

    startLive() {
      if (this.polling) return;
      this.polling = true;
      let last = { events: this.data.event_total, spans: this.data.span_count, status: this.data.run.status, calls: this.data.run.llm_calls };
      const timer = setInterval(async () => {
        if (!this.alive()) return;
        let live;
        try {
          live = await api(`${runPath(this.runId)}/live`);
        } catch (error) {
          return; // a missed beat: the next one tries again
        }
        if (!this.alive()) return;
        const now = { events: live.event_total, spans: live.span_count, status: live.run.status, calls: live.run.llm_calls };
        if (now.events === last.events && now.spans === last.spans && now.status === last.status && now.calls === last.calls) return;
        last = now;
        if (now.status !== "running") stop();
        try {
          const data = await api(runPath(this.runId));
          if (!this.alive()) return;
          this.data = data;
          this.index(data);
          this.drawHead();
          this.drawTree();
          this.drawTimeline();
          this.events.grow(data.event_counts);
          this.loadCalls(this.callsOffset || 0);
          if (now.status !== "running") this.loadSummary();
        } catch (error) {
          /* shown on the next change */
        }
      }, 1000);
      const stop = () => {
        clearInterval(timer);
        this.polling = false;
        if (this.liveBadge) this.liveBadge.hidden = true;
      };
      cleanups.push(stop);
    }
  }

  function budgetBars(used, limits, thresholds, status) {
    const bars = [];
    if (limits.max_tokens !== null && limits.max_tokens !== undefined) {
      bars.push(budgetBar(used.tokens, limits.max_tokens, `${fmtInt(used.tokens)} / ${fmtInt(limits.max_tokens)} tokens`, thresholds, status));
    }
    if (limits.max_usd !== null && limits.max_usd !== undefined) {
      bars.push(budgetBar(used.usd, limits.max_usd, `${fmtUsd(used.usd)} / ${fmtUsd(limits.max_usd)}`, thresholds, status));
    }
    return bars.length ? h("span", { class: "budgets" }, bars) : null;
  }

  function budgetBar(used, limit, text, thresholds, status) {
    const p = pct(used, limit);
    const fill = h("span", { class: "fill status-" + String(status).replace(/[^a-z_]/g, "") + (p >= 100 ? " over" : "") });
    fill.style.width = Math.min(100, p) + "%";
    const track = h("span", { class: "track" }, fill);
    for (const t of thresholds) {
      if (typeof t !== "number" || !(t > 0 && t < 100)) continue;
      const mark = h("span", { class: "threshold", title: `threshold ${t}%` });
      mark.style.left = t + "%";
      track.append(mark);
    }
    return h("span", { class: "budget", title: `${text} (${fmtPct(p)})`, "data-pct": String(Math.round(p === Infinity ? 1e9 : p)) }, track, h("span", { class: "budget-text" }, `${text} · ${fmtPct(p)}`));
  }

  // -- search matches, marked in text ----------------------------------------------------

  // `text` as nodes with each case-insensitive occurrence of `needle` in a <mark>.
  function highlighted(text, needle) {
    const out = [];
    const lower = text.toLowerCase(), want = needle.toLowerCase();
    let at = 0;
    for (let i = want ? lower.indexOf(want) : -1; i >= 0; i = lower.indexOf(want, at)) {
      if (i > at) out.push(text.slice(at, i));
      out.push(h("mark", {}, text.slice(i, i + want.length)));
      at = i + want.length;
    }
    if (at < text.length) out.push(text.slice(at));
    return out;
  }

  // Wrap each occurrence of `needle` in the text under `root` in a <mark>;
  // returns the first mark. Only text nodes are split: no markup is parsed.
  function markText(root, needle) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const found = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.parentElement && node.parentElement.closest("pre, .content") && node.nodeValue.toLowerCase().includes(needle.toLowerCase())) found.push(node);
    }
    let first = null;
    for (const node of found) {
      const parts = highlighted(node.nodeValue, needle);
      const frag = document.createDocumentFragment();
      for (const part of parts) frag.append(part instanceof Node ? part : document.createTextNode(part));
      first = first || frag.querySelector("mark");
      node.parentNode.replaceChild(frag, node);
    }
    return first;
  }

  // -- the event stream: a virtual list over pages of the events API -------------------

  const ROW = 26;
  const EVENT_PAGE = 200;

  function eventText(d) {
    switch (d.type) {
      case "llm_call":
        return `${d.model} · ${fmtInt(d.input_tokens)} in / ${fmtInt(d.output_tokens)} out · ${fmtMs(d.duration_ms)} · iteration ${d.iteration}`;
      case "tool_execution":
        return `${d.tool_name} ${d.status} · ${d.classification} · ${fmtMs(d.duration_ms)} · iteration ${d.iteration}`;
      case "tool_rejected":
        return `${d.tool_name}: ${d.reason}`;
      case "loop_intervention":
        return `${d.kind} ${d.tool_name} (seen ${d.count}×) · iteration ${d.iteration}`;
      case "context_compaction":
        return `archived ${fmtInt(d.archived_messages)} messages, summary of ${fmtInt(d.new_summary_len)} characters`;
      case "phase_change":
        return `${d.from_phase} → ${d.to_phase} · iteration ${d.iteration}`;
      case "loop_complete":
        return `${d.status} after ${d.iterations} iterations, ${fmtMs(d.total_duration_ms)}`;
      case "schema_retry":
        return `attempt ${d.attempt}: ${(d.errors || []).join("; ")}`;
      default:
        return JSON.stringify(d);
    }
  }

  class EventList {
    constructor(view) {
      this.view = view;
      const box = clear(view.eventsBox);
      this.filters = h("div", { class: "chips event-filters", role: "group", "aria-label": "event types" });
      this.count = h("span", { class: "muted small", "data-testid": "event-count" });
      this.viewport = h("div", { class: "vlist", tabindex: "0", "data-testid": "event-list" });
      this.spacer = h("div", { class: "vlist-spacer" });
      this.viewport.append(this.spacer);
      this.detailLink = h("span", { class: "event-detail-link" });
      this.detailText = h("pre", {});
      this.detail = h("div", { class: "event-detail", "data-testid": "event-detail", hidden: true }, this.detailLink, this.detailText);
      box.append(this.filters, this.count, this.viewport, this.detail);
      this.viewport.addEventListener("scroll", () => this.schedule(), { passive: true });
      this.pages = new Map();
      this.rows = new Map(); // index -> element
    }

    reset(counts) {
      this.counts = counts;
      this.types = null;
      this.drawFilters();
      this.restart();
    }

    grow(counts) {
      this.counts = counts;
      this.drawFilters();
      const old = this.total;
      this.total = this.computeTotal();
      // Pages past the old end may have been short: drop them.
      const lastPage = Math.floor(Math.max(0, old - 1) / EVENT_PAGE);
      for (const key of Array.from(this.pages.keys())) if (key >= lastPage) this.pages.delete(key);
      for (const [i, el] of this.rows) if (i >= lastPage * EVENT_PAGE) { el.remove(); this.rows.delete(i); }
      this.layout();
    }

    computeTotal() {
      const types = this.types || Object.keys(this.counts);
      return types.reduce((a, t) => a + (this.counts[t] || 0), 0);
    }

    drawFilters() {
      const box = clear(this.filters);
      const types = Object.keys(this.counts).sort();
      box.append(h("button", { type: "button", class: "chip toggle-chip" + (this.types === null ? " on" : ""), "aria-pressed": String(this.types === null), "data-event-type": "", onclick: () => this.choose(null) }, "all"));
      for (const t of types) {
        const on = this.types !== null && this.types.includes(t);
        box.append(h("button", { type: "button", class: "chip toggle-chip" + (on ? " on" : ""), "aria-pressed": String(on), "data-event-type": t, onclick: () => this.choose(t) }, `${t} ${fmtInt(this.counts[t])}`));
      }
    }

    choose(type) {
      if (type === null) this.types = null;
      else {
        const current = new Set(this.types || []);
        if (current.has(type)) current.delete(type);
        else current.add(type);
        this.types = current.size ? Array.from(current).sort() : null;
      }
      this.drawFilters();
      this.restart();
    }

    restart() {
      this.generation = (this.generation || 0) + 1;
      this.pages = new Map();
      for (const el of this.rows.values()) el.remove();
      this.rows = new Map();
      this.total = this.computeTotal();
      this.viewport.scrollTop = 0;
      this.detail.hidden = true;
      delete this.viewport.dataset.ready;
      this.layout();
    }

    layout() {
      this.spacer.style.height = this.total * ROW + "px";
      this.count.textContent = `${fmtInt(this.total)} events` + (this.types ? ` of type ${this.types.join(", ")}` : "");
      if (!this.total) {
        this.viewport.dataset.ready = "1";
        this.view.firstScreen();
      }
      this.render();
    }

    schedule() {
      if (this.frame) return;
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }

    page(number) {
      let entry = this.pages.get(number);
      if (entry) return entry;
      const generation = this.generation;
      const q = new URLSearchParams({ offset: String(number * EVENT_PAGE), limit: String(EVENT_PAGE) });
      if (this.types) q.set("types", this.types.join(","));
      entry = { rows: null };
      entry.promise = api(`${runPath(this.view.runId)}/events?${q}`).then(
        (data) => {
          if (generation !== this.generation || !this.view.alive()) return;
          entry.rows = data.events;
          this.render();
        },
        (error) => {
          if (generation !== this.generation) return;
          this.pages.delete(number);
          this.count.textContent = "events: " + error.message;
        }
      );
      this.pages.set(number, entry);
      return entry;
    }

    render() {
      const top = this.viewport.scrollTop;
      const height = this.viewport.clientHeight || 400;
      const first = Math.max(0, Math.floor(top / ROW) - 10);
      const last = Math.min(this.total - 1, Math.ceil((top + height) / ROW) + 10);
      // Drop rows far from view so the DOM stays small however long the run.
      for (const [i, el] of this.rows) {
        if (i < first - 50 || i > last + 50) {
          el.remove();
          this.rows.delete(i);
        }
      }
      let complete = true;
      for (let i = first; i <= last; i++) {
        const entry = this.page(Math.floor(i / EVENT_PAGE));
        const event = entry.rows ? entry.rows[i % EVENT_PAGE] : undefined;
        if (!event) {
          complete = false;
          continue;
        }
        if (this.rows.has(i) && this.rows.get(i).dataset.seq === String(event.seq)) continue;
        if (this.rows.has(i)) this.rows.get(i).remove();
        const el = this.eventRow(event);
        el.style.top = i * ROW + "px";
        this.viewport.append(el);
        this.rows.set(i, el);
      }
      // Prefetch the page after the view.
      if (last + 1 < this.total) this.page(Math.floor((last + 1) / EVENT_PAGE));
      if (complete && this.total) {
        this.viewport.dataset.ready = "1";
        this.view.firstScreen();
      }
    }

    eventRow(event) {
      const where = this.view.spanName(event.span_id);
      const row = h(
        "div",
        { class: "event-row", role: "button", tabindex: "-1", "data-seq": String(event.seq), "data-type": event.type },
        h("span", { class: "seq mono" }, "#" + event.seq),
        h("span", { class: "badge type-" + String(event.type).replace(/[^a-z_]/g, "") }, event.type),
        h("span", { class: "where muted" }, where || ""),
        h("span", { class: "text" }, eventText(event.data))
      );
      if (event.seq === this.focusSeq) row.classList.add("highlight");
      row.addEventListener("click", () => {
        this.show(event, where);
        history.replaceState(null, "", objectHref(this.view.runId, "event", event.seq));
      });
      return row;
    }

    show(event, where) {
      this.detail.hidden = false;
      clear(this.detailLink).append(permalink(objectHref(this.view.runId, "event", event.seq), "event"));
      this.detailText.textContent = `event #${event.seq} in ${where || "span " + (event.span_id || "–")}\n` + JSON.stringify(event.data, null, 2);
    }

    // Scroll to event `seq` (by its position in the whole stream) and show it.
    async focus(seq) {
      let data;
      try {
        data = await api(`${runPath(this.view.runId)}/events/${seq}`);
      } catch (error) {
        this.count.textContent = `event #${seq}: ${error.message}`;
        return;
      }
      if (!this.view.alive()) return;
      if (this.types !== null) {
        this.types = null;
        this.drawFilters();
        this.restart();
      }
      this.focusSeq = seq;
      for (const el of this.rows.values()) el.remove();
      this.rows = new Map();
      this.viewport.scrollIntoView({ block: "center" });
      this.viewport.scrollTop = Math.max(0, data.offset * ROW - (this.viewport.clientHeight || 400) / 2 + ROW);
      this.show(data.event, this.view.spanName(data.event.span_id));
      this.render();
    }
  }

  // The first screen of a run: its tree and first event rows are on the page.
  RunView.prototype.firstScreen = function () {
    if (this.firstScreenDone || !this.alive()) return;
    this.firstScreenDone = true;
    const at = performance.now();
    window.__steptraceFirstScreen = at;
    try {
      performance.mark("steptrace:first-screen");
    } catch (error) {
      /* marks are optional */
    }
    this.root.dataset.ready = "run";
  };

  window.addEventListener("popstate", route);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", route);
  else route();
})();
