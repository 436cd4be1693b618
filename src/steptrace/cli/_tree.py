"""The step tree of a stored run, with usage and budget use at every node.

``step_tree(stored)`` links the run's spans by ``parent_id`` into ``Node``
objects: the run, its personas, steps and user spans, each with the LLM usage
recorded in it (``own``, from the run's LLM call log) and in its whole subtree
(``total``), and its budget (``max_tokens``/``max_usd`` from the span's stored
context). Budgets are checked against subtrees (a nested step's calls count
against its parent's budget), so ``total`` is what a limit is compared with.
LLM-call and tool spans are folded into counts on their parent
(``llm_spans``, ``tool_spans``) unless ``all_spans`` keeps them as nodes; a
kept LLM-call span then carries the usage its request recorded (the call log
attributes calls to the enclosing step, so that usage moves from the node the
log gave it to, and no total counts it twice).
Spans whose parent was not stored (a run still going stores spans as they
end) become roots. ``node_json`` is the machine form of a node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..store import SpanRow, StoredRun

__all__ = ["Node", "Usage", "node_json", "step_tree"]

_FOLDED = {"llm_call": "llm_spans", "tool": "tool_spans"}


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    unpriced_calls: int = 0
    """Calls of unknown cost (left out of ``cost_usd``)."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.llm_calls += other.llm_calls
        self.unpriced_calls += other.unpriced_calls

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 12),
            "llm_calls": self.llm_calls,
        }
        if self.unpriced_calls:  # present only when the cost leaves calls out
            data["unpriced_calls"] = self.unpriced_calls
        return data


@dataclass(slots=True)
class Node:
    span: SpanRow
    children: list[Node] = field(default_factory=list)
    own: Usage = field(default_factory=Usage)
    total: Usage = field(default_factory=Usage)
    llm_spans: int = 0
    tool_spans: int = 0

    @property
    def kind(self) -> str:
        return self.span.kind

    @property
    def status(self) -> str:
        """A step's ledger status (completed / failed / skipped / escalated),
        a persona's or run's recorded status, else the span's (ok / error)."""
        recorded = self.span.metadata.get("status")
        return recorded if isinstance(recorded, str) else self.span.status

    @property
    def max_tokens(self) -> int | None:
        value = self.span.context.get("max_tokens")
        return value if isinstance(value, int) else None

    @property
    def max_usd(self) -> float | None:
        value = self.span.context.get("max_usd")
        return float(value) if isinstance(value, int | float) else None

    @property
    def has_budget(self) -> bool:
        return self.max_tokens is not None or self.max_usd is not None

    @property
    def budget_pct(self) -> float | None:
        """Percent of the budget used (the larger of the token and USD shares)."""
        pct: float | None = None
        if self.max_tokens is not None:
            pct = 100.0 * self.total.tokens / self.max_tokens
        if self.max_usd is not None:
            if self.max_usd == 0:
                usd_pct = 0.0 if self.total.cost_usd == 0 else float("inf")
            else:
                usd_pct = 100.0 * self.total.cost_usd / self.max_usd
            pct = usd_pct if pct is None else max(pct, usd_pct)
        return pct

    @property
    def duration_s(self) -> float | None:
        end = self.span.end_ns
        return None if end is None else (end - self.span.start_ns) / 1e9

    def walk(self) -> list[Node]:
        """This node and every node below it, depth first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


def step_tree(stored: StoredRun, *, all_spans: bool = False) -> list[Node]:
    """The roots of the run's span tree (normally one: the run)."""
    nodes = {s.span_id: Node(s) for s in stored.spans}
    for call in stored.llm_calls:
        node = nodes.get(call.span_id) if call.span_id is not None else None
        if node is None:
            continue
        node.own.input_tokens += call.input_tokens
        node.own.output_tokens += call.output_tokens
        if call.cost_usd is None:
            node.own.unpriced_calls += 1
        else:
            node.own.cost_usd += call.cost_usd
        node.own.llm_calls += 1
    if all_spans:
        for span in stored.spans:
            if span.kind == "llm_call":
                _move_request_usage(nodes[span.span_id], nodes)
    roots: list[Node] = []
    for span in stored.spans:  # start order: children in the order they began
        node = nodes[span.span_id]
        parent = None if span.parent_id is None else nodes.get(span.parent_id)
        folded = _FOLDED.get(span.kind)
        if parent is not None and folded is not None and not all_spans:
            setattr(parent, folded, getattr(parent, folded) + 1)
            # Usage recorded under a folded span belongs to its parent.
            parent.own.add(node.own)
            continue
        if parent is None:
            roots.append(node)
        else:
            parent.children.append(node)
    for root in roots:
        _sum(root)
    return roots


def _request_usage(span: SpanRow) -> Usage | None:
    """What one LLM request recorded on its span, or None (a failed request)."""
    meta = span.metadata
    inp, out = meta.get("gen_ai.usage.input_tokens"), meta.get("gen_ai.usage.output_tokens")
    if not isinstance(inp, int) or not isinstance(out, int):
        return None
    cost = meta.get("steptrace.cost_usd")
    if isinstance(cost, int | float):
        return Usage(inp, out, float(cost), 1)
    return Usage(inp, out, 0.0, 1, 1)


def _move_request_usage(node: Node, nodes: dict[int, Node]) -> None:
    usage = _request_usage(node.span)
    if usage is None:
        return
    node.own.add(usage)
    # The call log holds the call on the nearest enclosing span with calls.
    parent_id = node.span.parent_id
    while parent_id is not None and parent_id in nodes:
        holder = nodes[parent_id]
        if holder.own.llm_calls:
            own = holder.own
            own.input_tokens = max(0, own.input_tokens - usage.input_tokens)
            own.output_tokens = max(0, own.output_tokens - usage.output_tokens)
            own.cost_usd = max(0.0, own.cost_usd - usage.cost_usd)
            own.llm_calls -= 1
            own.unpriced_calls = max(0, own.unpriced_calls - usage.unpriced_calls)
            return
        parent_id = holder.span.parent_id


def _sum(node: Node) -> Usage:
    total = Usage()
    total.add(node.own)
    for child in node.children:
        total.add(_sum(child))
    node.total = total
    return total


def node_json(node: Node) -> dict[str, Any]:
    """A node and its subtree as JSON-ready data."""
    span = node.span
    data: dict[str, Any] = {
        "span_id": span.span_id,
        "parent_id": span.parent_id,
        "name": span.name,
        "kind": span.kind,
        "status": node.status,
        "error": span.error,
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "own": node.own.as_dict(),
        "total": node.total.as_dict(),
    }
    if node.has_budget:
        data["budget"] = {
            "max_tokens": node.max_tokens,
            "max_usd": node.max_usd,
            "used_tokens": node.total.tokens,
            "used_usd": round(node.total.cost_usd, 12),
            "pct": _json_pct(node.budget_pct),
        }
    else:
        data["budget"] = None
    if node.llm_spans or node.tool_spans:
        data["llm_spans"] = node.llm_spans
        data["tool_spans"] = node.tool_spans
    data["children"] = [node_json(child) for child in node.children]
    return data


def _json_pct(pct: float | None) -> float | None:
    # A zero USD limit with any cost is infinitely over: JSON has no infinity.
    return None if pct is None or pct == float("inf") else round(pct, 3)
