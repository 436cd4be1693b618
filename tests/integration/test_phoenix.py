"""The OpenTelemetry export end-to-end against a receiver nobody here wrote.

A multi-step run (a budgeted run, persona and step with an LLM request, an
agent loop whose tools succeed and fail, a failing step) is recorded into a
SQLite store and, at the same time, sent by ``OpenTelemetryExporter`` through
the SDK's OTLP/HTTP exporter to a real Arize Phoenix on 127.0.0.1. The spans
Phoenix serves back through its REST API must tell the same story as the
stored run: every span, its name, parent, trace, times, GenAI and
``steptrace.*`` attributes, status and agent events; and Phoenix must be able
to query spans by those attributes.

Opt-in (Phoenix is heavy): run ``scripts/phoenix.sh`` once, then
``STEPTRACE_PHOENIX=1 scripts/test.sh tests/integration``.

The ``otlp-json`` file of ``export_run`` is not sent: Phoenix's ``/v1/traces``
takes OTLP protobuf only and answers ``415 Unsupported content type`` to
``application/json`` (Phoenix 20.26). Instead its content (``otlp_json`` of
the stored run, the same encoder) is compared span for span with what Phoenix
received over the live path.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import steptrace
import steptrace.store
from steptrace import CompletedStep
from steptrace.agent import agent_loop, tool
from steptrace.events import AgentEvent
from steptrace.export import OpenTelemetryExporter, otlp_json
from steptrace.llm import ToolCall, llm_call
from steptrace.store import SpanRow, StoredRun
from steptrace.testing import FakePrices, ScriptedProvider, block_network

from .conftest import HOW_TO_RUN, PhoenixServer, is_loopback, phoenix_opted_in

pytestmark = [
    pytest.mark.phoenix,
    pytest.mark.skipif(not phoenix_opted_in(), reason=HOW_TO_RUN),
]

NOTE = "Buy milk and bread."
PERSONA_MAX_USD = 2.0
OUR_NAMESPACES = ("gen_ai.", "steptrace.", "error.")
"""Attributes steptrace sets; Phoenix adds its own (``llm.*``, ``tool.*``)."""
PHOENIX_KINDS = {"chat": "LLM", "execute_tool": "TOOL", "invoke_agent": "AGENT"}
"""How Phoenix classifies spans by ``gen_ai.operation.name``: proof that it
recognized the GenAI conventions rather than merely storing the keys."""


@tool(classification="read_only")
def read_file(path: str) -> str:
    """Read a file of the workspace."""
    if path != "notes.txt":
        raise FileNotFoundError(path)
    return NOTE


@tool(classification="read_only")
def count_words(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


def run_scenario() -> steptrace.Run:
    """Run ``phoenix-demo`` (budget) -> persona ``writer`` (budget) -> step
    ``plan`` (budget, one LLM request), then agent loop ``researcher``
    (budget): two tool calls in one turn (one fails), one more, an answer;
    then step ``publish`` fails (the persona carries on without it)."""
    planner = ScriptedProvider(["1. read the note 2. count its words 3. answer"])
    agent_model = ScriptedProvider(
        [
            [
                ToolCall(id="call_1", name="read_file", arguments={"path": "missing.txt"}),
                ToolCall(id="call_2", name="read_file", arguments={"path": "notes.txt"}),
            ],
            [ToolCall(id="call_3", name="count_words", arguments={"text": NOTE})],
            "The note says to buy milk and bread (4 words).",
        ]
    )

    @steptrace.step(model="gpt-4o", budget={"max_tokens": 5000, "max_usd": 1.0})
    def plan() -> str:
        return llm_call("Plan the work.", provider=planner).text

    @steptrace.step
    def publish(text: str) -> None:
        raise ValueError(f"no channel for {len(text)} characters")

    @steptrace.persona("writer", budget={"max_usd": PERSONA_MAX_USD})
    def writer() -> str:
        plan()
        answer = agent_loop(
            "Read the note and count its words.",
            tools=[read_file, count_words],
            model="gpt-4o",
            provider=agent_model,
            max_tokens=200,
            budget={"max_tokens": 20_000},
            name="researcher",
        ).text
        with contextlib.suppress(ValueError):
            publish(answer)
        return answer

    with steptrace.run(
        "phoenix-demo",
        budget={"max_tokens": 100_000, "max_usd": 5.0},
        metadata={"ticket": 42},
    ) as run:
        writer()
    return run


def send_to_phoenix_and_store(phoenix: PhoenixServer, project: str, store_path: Path) -> StoredRun:
    """Run the scenario with the OTLP/HTTP exporter and the store writer both
    listening; return the run as the store holds it."""
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "steptrace-integration", "openinference.project.name": project}
        )
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix.traces_url)))
    exporter = OpenTelemetryExporter(provider)
    writer = steptrace.store.record_runs(store_path)
    steptrace.add_span_processor(exporter)
    try:
        run = run_scenario()
    finally:
        steptrace.remove_span_processor(exporter)
        writer.stop()
        assert provider.force_flush(30_000), "the OTLP exporter did not flush in 30 s"
        provider.shutdown()
    assert exporter.failures == 0
    assert writer.failures == 0
    stored = steptrace.store.open_store(store_path).get_run(run.id)
    assert stored is not None
    return stored


# -- what the stored run says Phoenix should hold -------------------------------------


def exported_key(metadata_key: str) -> str:
    """The documented attribute name of a span metadata key."""
    if metadata_key.startswith(("gen_ai.", "steptrace.")):
        return metadata_key
    return "steptrace." + metadata_key


def as_json(value: Any) -> Any:
    """A value as it reads back from Phoenix's JSON (sequences become lists)."""
    if isinstance(value, list | tuple):
        return [as_json(item) for item in value]
    return value


def event_fields(event: AgentEvent) -> dict[str, Any]:
    """An agent event's span-event attributes: its fields but ``type``, no
    ``None``, sequences as lists of strings."""
    fields: dict[str, Any] = {}
    for key, value in event.to_dict().items():
        if key == "type" or value is None:
            continue
        fields[key] = [str(item) for item in value] if isinstance(value, list | tuple) else value
    return fields


def events_under(stored: StoredRun, span_id: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("steptrace." + event.type, event_fields(event))
        for event, owner in zip(stored.events, stored.event_span_ids, strict=True)
        if owner == span_id
    ]


def unix_ns(timestamp: str) -> int:
    moment = datetime.fromisoformat(timestamp)
    whole = int(moment.timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000


def assert_same_instant(phoenix_time: str, stored_ns: int | None, what: str) -> None:
    # Phoenix keeps microseconds; the stored time has nanoseconds.
    assert stored_ns is not None, what
    assert abs(unix_ns(phoenix_time) - stored_ns) < 1000, (what, phoenix_time, stored_ns)


# -- the tests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """The run as stored, and the spans Phoenix served back for it."""

    project: str
    stored: StoredRun
    received: list[dict[str, Any]]

    @property
    def rows(self) -> dict[int, SpanRow]:
        return {row.span_id: row for row in self.stored.spans}

    @property
    def exported(self) -> dict[int, dict[str, Any]]:
        """Phoenix's spans by the steptrace span id they carry."""
        out: dict[int, dict[str, Any]] = {}
        for span in self.received:
            key = span["attributes"]["steptrace.span.id"]
            assert key not in out, f"steptrace span {key} exported twice"
            out[key] = span
        return out

    @property
    def steps(self) -> dict[int | None, CompletedStep]:
        return {step.span_id: step for step in self.stored.completed_steps}

    @property
    def agent_step_ids(self) -> set[int | None]:
        return {s.span_id for s in self.stored.completed_steps if s.function == "agent_loop"}


@pytest.fixture(scope="module")
def exchange(phoenix: PhoenixServer, tmp_path_factory: pytest.TempPathFactory) -> Exchange:
    """Send the scenario once for all the comparisons below, under the same
    loopback-only guard and strict mode as every test (module fixtures run
    outside the per-test ones)."""
    project = f"steptrace-{uuid.uuid4().hex[:8]}"
    store_path = tmp_path_factory.mktemp("store") / "runs.db"
    with block_network() as attempts:
        steptrace.reset()
        steptrace.configure(strict=True, price_source=FakePrices(output_per_million=2.0))
        try:
            stored = send_to_phoenix_and_store(phoenix, project, store_path)
            received = phoenix.wait_for_spans(project, len(stored.spans))
        finally:
            steptrace.reset()
            steptrace.configure(strict=False, price_source=None)
    assert attempts == [], f"the exchange tried to reach the network: {attempts}"
    return Exchange(project, stored, received)


def test_every_stored_span_arrives_once_in_one_trace_under_its_parent(
    exchange: Exchange,
) -> None:
    assert len(exchange.received) == len(exchange.stored.spans) == 12
    exported, rows = exchange.exported, exchange.rows
    assert sorted(exported) == sorted(rows)
    assert len({span["context"]["trace_id"] for span in exchange.received}) == 1
    # Each parent link is the stored one, in OpenTelemetry span ids.
    steptrace_id_of = {span["context"]["span_id"]: sid for sid, span in exported.items()}
    for sid, span in exported.items():
        parent = span["parent_id"]
        assert (None if parent is None else steptrace_id_of[parent]) == rows[sid].parent_id


def test_names_times_and_kinds_follow_the_genai_mapping(exchange: Exchange) -> None:
    exported = exchange.exported
    for sid, row in exchange.rows.items():
        span = exported[sid]
        assert span["name"] == expected_name(row, exchange.agent_step_ids), row
        assert_same_instant(span["start_time"], row.start_ns, f"start of {row.name}")
        assert_same_instant(span["end_time"], row.end_ns, f"end of {row.name}")
        operation = span["attributes"].get("gen_ai.operation.name")
        expected_operation = {"llm_call": "chat", "tool": "execute_tool"}.get(row.kind)
        if sid in exchange.agent_step_ids:
            expected_operation = "invoke_agent"
        assert operation == expected_operation, row.name
        if operation is not None:
            assert span["span_kind"] == PHOENIX_KINDS[operation], row.name
    assert sorted(span["name"] for span in exchange.received) == sorted(
        ["phoenix-demo", "writer", "plan", "invoke_agent researcher", "publish"]
        + ["chat gpt-4o"] * 4
        + ["execute_tool read_file"] * 2
        + ["execute_tool count_words"]
    )


def test_attributes_equal_the_stored_values(exchange: Exchange) -> None:
    stored, exported, steps = exchange.stored, exchange.exported, exchange.steps
    for sid, row in exchange.rows.items():
        attributes = exported[sid]["attributes"]
        assert attributes["steptrace.run.id"] == stored.id
        assert attributes["steptrace.span.kind"] == row.kind
        # Every stored metadata value under its documented name: the GenAI
        # keys of requests and tools (model, usage), tokens, cost and status.
        for key, value in row.metadata.items():
            assert attributes[exported_key(key)] == as_json(value), (row.name, key)
        # Budgets of the run, persona or step the span is (absent: no limit).
        assert attributes.get("steptrace.budget.max_tokens") == row.context.get("max_tokens")
        assert attributes.get("steptrace.budget.max_usd") == row.context.get("max_usd")
        if sid in steps:
            step = steps[sid]
            assert attributes["steptrace.step"] == step.name
            assert attributes["steptrace.cost_usd"] == step.cost_usd
            assert attributes.get("steptrace.budget.max_tokens") == step.max_tokens
            assert attributes.get("steptrace.budget.max_usd") == step.max_usd
        if sid in exchange.agent_step_ids:
            step = steps[sid]
            assert attributes["gen_ai.agent.name"] == step.name
            assert attributes["gen_ai.request.model"] == step.model
            assert attributes["gen_ai.usage.input_tokens"] == step.input_tokens
            assert attributes["gen_ai.usage.output_tokens"] == step.output_tokens
    chats = [exported[row.span_id] for row in stored.spans if row.kind == "llm_call"]
    assert [chat["attributes"]["gen_ai.usage.input_tokens"] for chat in chats] == [
        call.input_tokens for call in stored.llm_calls
    ]
    assert [chat["attributes"]["steptrace.cost_usd"] for chat in chats] == [
        call.cost_usd for call in stored.llm_calls
    ]
    # The run's budget and totals, and the persona's budget.
    [root] = stored.children(None)
    run_attributes = exported[root.span_id]["attributes"]
    budget = stored.run.budget or {}
    assert run_attributes["steptrace.budget.max_tokens"] == budget["max_tokens"] == 100_000
    assert run_attributes["steptrace.budget.max_usd"] == budget["max_usd"] == 5.0
    assert run_attributes["steptrace.cost_usd"] == stored.run.cost_usd > 0
    assert run_attributes["steptrace.input_tokens"] == stored.run.input_tokens > 0
    assert run_attributes["steptrace.output_tokens"] == stored.run.output_tokens > 0
    assert run_attributes["steptrace.llm_calls"] == stored.run.llm_calls == 4
    assert run_attributes["steptrace.run.metadata.ticket"] == stored.run.metadata["ticket"]
    [persona] = [row for row in stored.spans if row.kind == "persona"]
    persona_attributes = exported[persona.span_id]["attributes"]
    assert persona_attributes["steptrace.budget.max_usd"] == PERSONA_MAX_USD
    assert "steptrace.budget.max_tokens" not in persona_attributes


def test_no_attribute_name_is_also_a_namespace(exchange: Exchange) -> None:
    """OpenTelemetry's naming rule, which backends that nest attributes by dots
    rely on: with ``a.b`` set, no ``a.b.c`` may exist."""
    names = {name for span in exchange.received for name in span["attributes"]}
    ours = sorted(name for name in names if name.startswith(OUR_NAMESPACES))
    assert ours
    assert [(a, b) for a in ours for b in ours if b.startswith(a + ".")] == []


def test_phoenix_finds_spans_by_steptrace_attributes(
    exchange: Exchange, phoenix: PhoenixServer
) -> None:
    [agent] = [span for span in exchange.received if span["name"].startswith("invoke_agent")]
    for query in (
        "steptrace.function:agent_loop",
        "steptrace.error_boundary:continue",
        "steptrace.budget.max_tokens:20000",
        "gen_ai.agent.name:researcher",
    ):
        found = phoenix.get_json(
            f"/v1/projects/{exchange.project}/spans", attribute=query, limit="1000"
        )
        assert [span["context"] for span in found["data"]] == [agent["context"]], query


def test_phoenix_holds_what_export_run_writes_for_the_stored_run(exchange: Exchange) -> None:
    """The live path (SDK spans over OTLP/protobuf) and the offline one
    (``otlp_json`` of the run read back from the store) agree span for span:
    name, kind, every steptrace and GenAI attribute, status and events."""
    request = otlp_json(exchange.stored)
    [resource] = request["resourceSpans"]
    [scope] = resource["scopeSpans"]
    offline = {
        decode_attributes(span["attributes"])["steptrace.span.id"]: span for span in scope["spans"]
    }
    exported = exchange.exported
    assert sorted(offline) == sorted(exported)
    for sid, written in offline.items():
        span = exported[sid]
        ours = {k: v for k, v in span["attributes"].items() if k.startswith(OUR_NAMESPACES)}
        assert span["name"] == written["name"]
        assert ours == as_json(decode_attributes(written["attributes"])), span["name"]
        assert span["status_code"] == OTLP_STATUS[written["status"]["code"]], span["name"]
        assert span["status_message"] == written["status"].get("message", "")
        received_events = [(event["name"], event["attributes"]) for event in span["events"]]
        assert received_events == [
            (event["name"], as_json(decode_attributes(event["attributes"])))
            for event in written["events"]
        ], span["name"]


def test_agent_events_arrive_as_span_events_of_their_span(exchange: Exchange) -> None:
    stored, exported = exchange.stored, exchange.exported
    for sid, row in exchange.rows.items():
        span = exported[sid]
        received = [(event["name"], event["attributes"]) for event in span["events"]]
        assert received == events_under(stored, sid), row.name
        assert row.end_ns is not None
        for event in span["events"]:
            moment = unix_ns(event["timestamp"])
            assert row.start_ns - 1000 < moment < row.end_ns + 1000, (row.name, event)
    assert sum(len(span["events"]) for span in exchange.received) == len(stored.events)
    assert {"llm_call", "tool_execution", "loop_complete"} <= {e.type for e in stored.events}


def test_errors_are_error_statuses_with_the_recorded_text(exchange: Exchange) -> None:
    exported = exchange.exported
    for sid, row in exchange.rows.items():
        assert_status(exported[sid], row)
    errors = [span["name"] for span in exchange.received if span["status_code"] == "ERROR"]
    assert sorted(errors) == ["execute_tool read_file", "publish"]
    [publish] = [span for span in exchange.received if span["name"] == "publish"]
    assert publish["status_message"].startswith("ValueError: no channel for")
    assert publish["attributes"]["error.type"] == "ValueError"
    assert publish["attributes"]["steptrace.status"] == "failed"


OTLP_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def decode_attributes(key_values: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """OTLP/JSON ``KeyValue`` list to a dict of Python values."""
    return {item["key"]: decode_any_value(item["value"]) for item in key_values}


def decode_any_value(value: Mapping[str, Any]) -> Any:
    [(kind, raw)] = value.items()
    if kind == "intValue":
        return int(raw)
    if kind == "arrayValue":
        return [decode_any_value(item) for item in raw.get("values", [])]
    assert kind in ("stringValue", "boolValue", "doubleValue"), kind
    return raw


def expected_name(row: SpanRow, agent_step_ids: set[int | None]) -> str:
    """The span name the documented GenAI mapping gives a stored span."""
    if row.kind == "llm_call":
        return f"chat {row.metadata['gen_ai.request.model']}"
    if row.kind == "tool":
        return f"execute_tool {row.metadata['gen_ai.tool.name']}"
    if row.span_id in agent_step_ids:
        return f"invoke_agent {row.name}"
    return row.name


def assert_status(span: dict[str, Any], row: SpanRow) -> None:
    """Error exactly where steptrace recorded one (a tool's error is its
    ``steptrace.status``), with the recorded text."""
    if row.status == "error":
        assert span["status_code"] == "ERROR", row.name
        assert span["status_message"] == (row.error or "error")
    elif row.kind == "tool" and row.metadata.get("steptrace.status") == "error":
        assert span["status_code"] == "ERROR", row.name
        assert span["status_message"] == f"tool `{row.metadata['gen_ai.tool.name']}` failed"
    else:
        assert span["status_code"] == "UNSET", row.name
        assert span["status_message"] == ""


def test_phoenix_listens_on_loopback_only(phoenix: PhoenixServer) -> None:
    """The wrapper's promise: Phoenix's HTTP and gRPC receivers, and anything
    else it opens, listen on 127.0.0.1 only."""
    addresses = phoenix.listening_addresses()
    assert f"127.0.0.1:{phoenix.port}" in addresses
    assert f"127.0.0.1:{phoenix.grpc_port}" in addresses
    assert [address for address in addresses if not is_loopback(address)] == []
