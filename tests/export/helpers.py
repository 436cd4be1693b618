"""Shared pieces of the export tests: an in-memory OpenTelemetry setup, the
scenario run (a persona, steps, an LLM call, an agent loop with one tool),
and readers that normalize exported spans for comparison."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import steptrace
from steptrace.agent import agent_loop, tool
from steptrace.export import OpenTelemetryExporter
from steptrace.llm import ToolCall, llm_call
from steptrace.testing import ScriptedProvider

NOTE = "Buy milk."


class Otel:
    """A tracer provider that records finished spans in memory, and the
    steptrace exporter feeding it (registered by the ``otel`` fixture)."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.exporter = OpenTelemetryExporter(self.provider)

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())

    def by_steptrace_id(self) -> dict[int, ReadableSpan]:
        """Finished spans keyed by the steptrace span id they carry."""
        out: dict[int, ReadableSpan] = {}
        for span in self.spans():
            key = attributes_of(span)["steptrace.span.id"]
            assert isinstance(key, int)
            out[key] = span
        return out


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def tree(spans: Sequence[ReadableSpan]) -> list[str]:
    """The span tree as indented names, children in start order."""
    ids = {span.context.span_id for span in spans if span.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for child in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
            lines.append("  " * depth + child.name)
            assert child.context is not None
            walk(child.context.span_id, depth + 1)

    walk(None, 0)
    return lines


SCENARIO_TREE = [
    "demo",
    "  writer",
    "    plan",
    "      chat gpt-4o",
    "    invoke_agent researcher",
    "      chat gpt-4o",
    "      execute_tool read_file",
    "      chat gpt-4o",
]


@tool(classification="read_only")
def read_file(path: str) -> str:
    """Read a file of the workspace."""
    if path != "notes.txt":
        raise FileNotFoundError(path)
    return NOTE


def run_scenario(*, tool_path: str = "notes.txt") -> steptrace.Run:
    """A run ``demo`` (budget) -> persona ``writer`` (budget) -> step ``plan``
    (budget, one LLM call) and an agent loop ``researcher`` (budget) that calls
    ``read_file`` once, then answers."""
    planner = ScriptedProvider(["1. read the note 2. answer"])
    agent_model = ScriptedProvider(
        [
            [ToolCall(id="call_1", name="read_file", arguments={"path": tool_path})],
            "The note says: buy milk.",
        ]
    )

    @steptrace.step(model="gpt-4o", budget={"max_tokens": 5000, "max_usd": 1.0})
    def plan() -> str:
        return llm_call("Plan the work.", provider=planner).text

    @steptrace.persona("writer", budget={"max_usd": 2.0})
    def writer() -> str:
        plan()
        result = agent_loop(
            "Read the note.",
            tools=[read_file],
            model="gpt-4o",
            provider=agent_model,
            max_tokens=200,
            budget={"max_tokens": 20_000},
            name="researcher",
        )
        return result.text

    with steptrace.run("demo", budget={"max_tokens": 100_000}, metadata={"ticket": 42}) as run:
        writer()
    return run


def decode_any_value(value: Mapping[str, Any]) -> Any:
    """An OTLP/JSON ``AnyValue`` back to the Python value the SDK would hold."""
    assert len(value) == 1, value
    [(kind, raw)] = value.items()
    if kind == "stringValue":
        assert isinstance(raw, str)
        return raw
    if kind == "boolValue":
        assert isinstance(raw, bool)
        return raw
    if kind == "intValue":
        assert isinstance(raw, str)
        assert raw.lstrip("-").isdigit(), raw
        return int(raw)
    if kind == "doubleValue":
        assert isinstance(raw, float | int)
        return float(raw)
    assert kind == "arrayValue", kind
    return tuple(decode_any_value(item) for item in raw["values"])


def decode_attributes(key_values: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in key_values:
        assert set(item) == {"key", "value"}, item
        assert item["key"] not in out, f"duplicate attribute {item['key']}"
        out[item["key"]] = decode_any_value(item["value"])
    return out
