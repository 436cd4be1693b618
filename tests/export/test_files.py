"""Offline files: the JSON lines round-trip the run, and the OTLP/JSON file is a
well-formed trace that says what the live OpenTelemetry export says."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.trace import StatusCode

import steptrace
from steptrace import CompletedStep, LlmTraceEntry, SpanKind, event_from_dict
from steptrace.export import export_run, jsonl_records, otlp_json, otlp_span_id, otlp_trace_id

from .helpers import Otel, attributes_of, decode_attributes, run_scenario

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


def spans_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    [resource] = document["resourceSpans"]
    [scope] = resource["scopeSpans"]
    assert scope["scope"]["name"] == "steptrace"
    spans = scope["spans"]
    assert isinstance(spans, list)
    return spans


def test_jsonl_round_trips_the_run(tmp_path: Path) -> None:
    run = run_scenario()
    path = export_run(run, tmp_path / "run.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    types = [record["type"] for record in records]
    assert types == sorted(types, key=["run", "span", "event", "completed_step", "llm_trace"].index)
    header, *rest = records
    assert header["type"] == "run"
    assert header["version"] == 1
    summary = json.loads(json.dumps(run.summary()))
    assert {key: header[key] for key in summary} == summary
    assert header["metadata"] == {"ticket": 42}
    assert (header["started_at"], header["ended_at"]) == (run.started_at, run.ended_at)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in rest:
        by_type.setdefault(record.pop("type"), []).append(record)
    assert sorted(by_type) == ["completed_step", "event", "llm_trace", "span"]

    assert by_type["span"] == [json.loads(json.dumps(span.to_dict())) for span in run.spans]
    events = [(r["span_id"], event_from_dict(r["event"])) for r in by_type["event"]]
    assert events == run.events_by_span()
    assert [e.type for _, e in events] == [
        "llm_call",
        "llm_call",
        "tool_execution",
        "llm_call",
        "loop_complete",
    ]
    steps = [CompletedStep.from_dict(r) for r in by_type["completed_step"]]
    assert steps == run.completed_steps
    assert [LlmTraceEntry(**r) for r in by_type["llm_trace"]] == run.llm_trace


def test_otlp_json_is_a_well_formed_trace(tmp_path: Path) -> None:
    run = run_scenario()
    path = export_run(run, tmp_path / "run.otlp.json", "otlp-json", service_name="nightly")
    document = json.loads(path.read_text(encoding="utf-8"))
    [resource] = document["resourceSpans"]
    assert decode_attributes(resource["resource"]["attributes"]) == {"service.name": "nightly"}
    spans = spans_of(document)
    assert len(spans) == len(run.spans)
    ids = [span["spanId"] for span in spans]
    assert len(set(ids)) == len(ids)
    assert {span["traceId"] for span in spans} == {otlp_trace_id(run.id)}
    roots = []
    for span in spans:
        assert HEX32.fullmatch(span["traceId"])
        assert span["traceId"].strip("0")
        assert HEX16.fullmatch(span["spanId"])
        assert span["spanId"].strip("0")
        if "parentSpanId" in span:
            assert span["parentSpanId"] in ids
        else:
            roots.append(span["name"])
        start, end = span["startTimeUnixNano"], span["endTimeUnixNano"]
        assert isinstance(start, str)
        assert isinstance(end, str)
        assert start.isdigit()
        assert end.isdigit()
        assert int(start) <= int(end)
        assert span["kind"] in (1, 3)
        assert span["status"]["code"] in (0, 2)
        attributes = decode_attributes(span["attributes"])
        assert attributes["steptrace.run.id"] == run.id
        for event in span["events"]:
            assert event["timeUnixNano"].isdigit()
            assert int(start) <= int(event["timeUnixNano"]) <= int(end)
            assert event["name"].startswith("steptrace.")
            decode_attributes(event["attributes"])
    assert roots == ["demo"]
    by_steptrace_id = {decode_attributes(s["attributes"])["steptrace.span.id"]: s for s in spans}
    for original in run.spans:
        mine = by_steptrace_id[original.span_id]
        assert mine["spanId"] == otlp_span_id(run.id, original.span_id)
        assert mine["startTimeUnixNano"] == str(original.start_ns)
        if original.parent_id is not None:
            assert mine["parentSpanId"] == otlp_span_id(run.id, original.parent_id)
    assert sum(len(s["events"]) for s in spans) == len(run.events)


def test_otlp_json_says_what_the_live_export_says(otel: Otel) -> None:
    run = run_scenario(tool_path="missing.txt")  # with a failing tool: an error status too
    live = otel.by_steptrace_id()
    live_ids = {sid: s.context.span_id for sid, s in live.items() if s.context}
    live_sid = {otel_id: sid for sid, otel_id in live_ids.items()}
    filed = spans_of(otlp_json(run))
    file_sid = {s["spanId"]: decode_attributes(s["attributes"])["steptrace.span.id"] for s in filed}
    assert any(s["status"]["code"] == 2 for s in filed)
    for span in filed:
        attributes = decode_attributes(span["attributes"])
        sid = attributes["steptrace.span.id"]
        other = live[sid]
        assert span["name"] == other.name
        assert attributes == attributes_of(other)
        client = other.kind is otel_trace.SpanKind.CLIENT
        assert span["kind"] == (3 if client else 1)
        error = other.status.status_code is StatusCode.ERROR
        assert span["status"] == (
            {"code": 2, "message": other.status.description} if error else {"code": 0}
        )
        file_parent = file_sid.get(span.get("parentSpanId", ""))
        live_parent = live_sid.get(other.parent.span_id) if other.parent else None
        assert file_parent == live_parent
        assert [(e["name"], decode_attributes(e["attributes"])) for e in span["events"]] == [
            (e.name, dict(e.attributes or {})) for e in other.events
        ]


def test_files_are_deterministic(tmp_path: Path) -> None:
    run = run_scenario()
    for fmt in ("jsonl", "otlp-json"):
        first = export_run(run, tmp_path / f"a.{fmt}", fmt).read_bytes()
        second = export_run(run, tmp_path / f"b.{fmt}", fmt).read_bytes()
        assert first == second
    assert otlp_trace_id(run.id) == otlp_trace_id(run.id) != otlp_trace_id(run.id + "x")
    assert otlp_span_id(run.id, 1) != otlp_span_id(run.id, 2)


def test_an_open_span_is_filed_as_open() -> None:
    @steptrace.step
    def alone() -> None:
        pass

    alone()  # in the default run, whose root never ends
    run = steptrace.current_run()
    spans = {s["name"]: s for s in spans_of(otlp_json(run))}
    root = decode_attributes(spans[run.name]["attributes"])
    assert root["steptrace.open"] is True
    assert "steptrace.open" not in decode_attributes(spans["alone"]["attributes"])
    records = list(jsonl_records(run))
    assert [r["type"] for r in records] == ["run", "span", "span", "completed_step"]
    assert records[1]["end_ns"] is None


def test_odd_values_are_made_legal_alike_in_files_and_live(otel: Otel, tmp_path: Path) -> None:
    marker = object()
    odd: dict[str, Any] = {
        "thing": marker,
        "tags": ["a", 1],
        "flags": (True, False),
        "nothing": None,
        "huge": 2**70,
        "mapping": {"b": 1, "a": [2]},
        "role": SpanKind.TOOL,
    }
    with steptrace.run("r") as run, steptrace.span("s", **odd):
        pass
    text = export_run(run, tmp_path / "r.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    [span] = [r for r in records if r["type"] == "span" and r["name"] == "s"]
    assert span["metadata"]["thing"] == str(marker)  # JSON cannot hold it: its text
    assert span["metadata"]["tags"] == ["a", 1]
    [filed] = [s for s in spans_of(otlp_json(run)) if s["name"] == "s"]
    attributes = decode_attributes(filed["attributes"])
    expected = {
        "steptrace.thing": str(marker),
        "steptrace.tags": ("a", "1"),  # mixed: a sequence of strings
        "steptrace.flags": (True, False),
        "steptrace.huge": str(2**70),  # beyond int64
        "steptrace.mapping": '{"a": [2], "b": 1}',
        "steptrace.role": "tool",
    }
    assert {key: attributes[key] for key in expected} == expected
    assert "steptrace.nothing" not in attributes
    [live] = [s for s in otel.spans() if s.name == "s"]
    assert attributes_of(live) == attributes


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    run = run_scenario()
    with pytest.raises(ValueError, match="'jsonl' or 'otlp-json'"):
        export_run(run, tmp_path / "x", "csv")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_otlp_json_parses_as_the_protobuf_message_when_available() -> None:
    json_format = pytest.importorskip("google.protobuf.json_format")
    trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    run = run_scenario(tool_path="missing.txt")
    document = otlp_json(run)
    # OTLP/JSON writes ids in hex where protobuf's own JSON mapping expects base64.
    for span in spans_of(document):
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    message = json_format.Parse(json.dumps(document), trace_service.ExportTraceServiceRequest())
    parsed = message.resource_spans[0].scope_spans[0].spans
    assert len(parsed) == len(run.spans)
    by_id = {span.span_id: span for span in parsed}
    for span in parsed:
        assert span.trace_id.hex() == otlp_trace_id(run.id)
        assert span.start_time_unix_nano <= span.end_time_unix_nano
        assert not span.parent_span_id or span.parent_span_id in by_id
    assert {span.status.code for span in parsed} == {0, 2}
    assert {span.kind for span in parsed} == {1, 3}
