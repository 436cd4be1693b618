"""One run across processes and machines: ``inject`` a carrier, ``extract`` it.

``inject()`` describes where this context is in its run as a small JSON-ready
dict (the carrier): the run's id and name, the current span, the shared
budgets in force (key, limits, window, pool kind and URL: enough to rebuild
them) and a W3C ``traceparent``. Ship it with the work (a Celery task
argument, a Ray remote call, an HTTP header); ``with extract(carrier):`` in
the worker continues the run: a ``Run`` with the same id whose root span's
parent is the carrier's span, drawing from the same shared budgets. The part
of the run done there is marked ``is_continuation``: stores record its spans,
events and calls under the run, but leave the run's header (status, totals)
to the process that opened it.

The ``traceparent``'s trace id and parent id are the ones the offline
OpenTelemetry files (``steptrace.export.export_run``) give the run and the
span (``trace_id_hex``/``span_id_hex`` here, the same derivation as
``otlp_trace_id``/``otlp_span_id``), unless a registered span processor
knows better: a processor with ``traceparent(span) -> str | None`` (the live
OpenTelemetry bridge) supplies the ids its own spans were given. Standard
library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import spans as _spans
from ._run import Continuation, Run, active_frame
from ._shared import BudgetSpec, SharedBudget, split_budget

__all__ = ["CARRIER_VERSION", "extract", "inject", "span_id_hex", "trace_id_hex"]

CARRIER_VERSION = 1

_TRACEPARENT = r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"  # compiled on first use
_MAX_SPAN_ID = 2**63 - 1


def _nonzero(hex_id: str) -> str:
    # An all-zero id is invalid in W3C trace context and OTLP.
    return hex_id if hex_id.strip("0") else hex_id[:-1] + "1"


def trace_id_hex(run_id: str) -> str:
    """The trace id (32 hex digits) steptrace gives a run in OpenTelemetry files."""
    import hashlib  # deferred: loading OpenSSL's hashes would slow ``import steptrace``

    return _nonzero(hashlib.sha256(f"steptrace trace {run_id}".encode()).hexdigest()[:32])


def span_id_hex(run_id: str, span_id: int) -> str:
    """The span id (16 hex digits) steptrace gives a span in OpenTelemetry files."""
    import hashlib

    return _nonzero(hashlib.sha256(f"steptrace span {run_id} {span_id}".encode()).hexdigest()[:16])


def _traceparent(span: _spans.Span) -> str:
    for processor in _spans.processors:
        supplier = getattr(processor, "traceparent", None)
        if supplier is None:
            continue
        try:
            found = supplier(span)
        except Exception:  # observability never breaks the run
            found = None
        if isinstance(found, str) and re.fullmatch(_TRACEPARENT, found):
            return found
    return f"00-{trace_id_hex(span.run_id)}-{span_id_hex(span.run_id, span.span_id)}-01"


def inject() -> dict[str, Any]:
    """The carrier of this context's place in its run (a JSON-ready dict).

    Keys: ``steptrace`` (the carrier version), ``run_id``, ``run_name``,
    ``span_id`` (the current span, the parent of the worker's spans),
    ``traceparent`` (W3C) and ``shared_budgets`` (each shared budget in force,
    innermost first). The pool URLs in it may hold credentials: send the
    carrier only where you would send them.
    """
    frame = active_frame()
    run = frame.run
    return {
        "steptrace": CARRIER_VERSION,
        "run_id": run.id,
        "run_name": run.name,
        "span_id": frame.span_id,
        "traceparent": _traceparent(frame),
        "shared_budgets": [budget.to_carrier() for budget, _ in frame.shared],
    }


def extract(
    carrier: Mapping[str, Any],
    *,
    budget: BudgetSpec = None,
    metadata: Mapping[str, Any] | None = None,
) -> Run:
    """Continue the run ``carrier`` (from ``inject``) came from, here:
    ``with steptrace.extract(carrier) as run:``.

    The ``Run`` has the carrier's run id and name, its root span's parent is
    the carrier's span, and usage inside it draws from the carrier's shared
    budgets (their pools are rebuilt from kind and URL, once per process).
    ``budget`` adds limits for this part of the run (any form ``run(budget=)``
    takes: a local budget, shared ones, or both); ``metadata``
    describes it. A malformed carrier raises ``ValueError``/``TypeError``
    naming the field.
    """
    if not isinstance(carrier, Mapping):
        raise TypeError(
            f"extract: carrier must be a dict from inject(), got {type(carrier).__name__}"
        )
    version = _field(carrier, "steptrace", int)
    if version != CARRIER_VERSION:
        raise ValueError(
            f"extract: carrier version {version} is not supported (this steptrace reads "
            f"version {CARRIER_VERSION})"
        )
    run_id = _field(carrier, "run_id", str)
    if not run_id:
        raise ValueError("extract: carrier field 'run_id' must be a non-empty string")
    run_name = _field(carrier, "run_name", str)
    span_id = _field(carrier, "span_id", int)
    if not 0 < span_id <= _MAX_SPAN_ID:
        raise ValueError(f"extract: carrier field 'span_id' must be a positive id, got {span_id}")
    traceparent = _field(carrier, "traceparent", str)
    if not re.fullmatch(_TRACEPARENT, traceparent):
        raise ValueError(
            "extract: carrier field 'traceparent' must be a W3C traceparent "
            f"(00-<32 hex>-<16 hex>-<2 hex>), got {traceparent!r}"
        )
    listed = _field(carrier, "shared_budgets", list)
    shared = tuple(
        SharedBudget.from_carrier(item, f"extract: carrier field 'shared_budgets[{index}]'")
        for index, item in enumerate(listed)
    )
    local, more = split_budget(budget, f"run `{run_name}` (extract)")
    return Run(
        run_name or None,
        budget=local,
        metadata=metadata,
        _continues=Continuation(run_id, span_id, traceparent),
        _shared=(*shared, *more),
    )


def _field(carrier: Mapping[str, Any], name: str, kind: type[Any]) -> Any:
    if name not in carrier:
        raise ValueError(f"extract: carrier is missing field {name!r} (was it made by inject()?)")
    value = carrier[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"extract: carrier field {name!r} must be {kind.__name__}, got {value!r}")
    return value
