"""steptrace.export: runs in OpenTelemetry and in offline files.

- ``OpenTelemetryExporter(tracer_provider=None)``: a span processor
  (``steptrace.add_span_processor(...)``) that re-creates every steptrace
  span as an OpenTelemetry SDK span under the GenAI semantic conventions, with
  steptrace's own attributes under ``steptrace.`` and agent events as span
  events (``_otel``, mapping in ``_semconv``). Needs the ``otel`` extra:
  ``pip install 'steptrace[otel]'``; without it, reaching for the exporter
  raises ``ImportError`` with that hint.
- ``export_run(run, path, format="jsonl" | "otlp-json")``: one run to a file
  (``_files``), standard library only, so it works with no extra installed.

Importing this package loads no OpenTelemetry: the exporter loads on first
access, so the file export stays usable (and cheap) without the SDK.
"""

from typing import TYPE_CHECKING, Any

from ._files import ExportFormat, export_run, jsonl_records, otlp_json, otlp_span_id, otlp_trace_id

if TYPE_CHECKING:
    from ._otel import OpenTelemetryExporter


def __getattr__(name: str) -> Any:
    if name == "OpenTelemetryExporter":
        from ._otel import OpenTelemetryExporter  # raises ImportError with the install hint

        globals()[name] = OpenTelemetryExporter
        return OpenTelemetryExporter
    raise AttributeError(f"module 'steptrace.export' has no attribute {name!r}")


__all__ = [
    "ExportFormat",
    "OpenTelemetryExporter",
    "export_run",
    "jsonl_records",
    "otlp_json",
    "otlp_span_id",
    "otlp_trace_id",
]
