"""How a steptrace span reads in OpenTelemetry: name, kind, attributes, status.

Standard library only: shared by the live bridge (``_otel``, which needs the
SDK) and the offline files (``_files``, which must not), so both give a span
the same name and attributes. This module owns that mapping and nothing else.

Names and ``gen_ai.operation.name`` (OpenTelemetry GenAI semantic conventions):

============================  ===================  ============================
steptrace span                operation            name
============================  ===================  ============================
LLM request (``llm_call``)    ``chat``             ``chat <model>``
tool call (``tool``)          ``execute_tool``     ``execute_tool <tool>``
step of ``agent_loop``        ``invoke_agent``     ``invoke_agent <step name>``
run, persona, plain step,     none                 the steptrace span's name
user span
============================  ===================  ============================

A plain step is not given a GenAI operation: the conventions have none for
"a function of the user's program", and inventing one would make backends
count it as an agent. It carries the ``steptrace.*`` attributes below.

Attributes. ``gen_ai.*`` keys the LLM and agent layers put on their spans pass
through unchanged (and ``gen_ai.provider.name`` is added next to the older
``gen_ai.system``). Every other metadata key ``k`` becomes ``steptrace.k``, so
a step's seed metadata reads ``steptrace.persona``, ``steptrace.model``,
``steptrace.status``, ``steptrace.llm_calls``, ``steptrace.input_tokens``,
``steptrace.output_tokens``, ``steptrace.cost_usd``, and a user span's
``source="web"`` reads ``steptrace.source``. Added from the frames:

The facts "added from the frames" below come from ``span_context`` (core),
which the run store also keeps, so a stored span reads exactly as it did live.

- every span: ``steptrace.span.kind`` (run, persona, step, llm_call, tool,
  custom), ``steptrace.span.id`` (the steptrace span id, an int; with
  ``steptrace.run.id`` it maps an exported span back to the stored one);
- a step: ``steptrace.step`` (its name), ``steptrace.function``,
  ``steptrace.error_boundary``; an ``invoke_agent`` step also
  ``gen_ai.agent.name``, ``gen_ai.request.model`` and ``gen_ai.usage.*``.
  (Not ``steptrace.step.function``: a name must not also be a namespace, as
  OpenTelemetry's naming rules say; backends that nest attributes by dots,
  Arize Phoenix for one, cannot query a key below a leaf);
- spans inside a step or persona (LLM requests, tools, user spans):
  ``steptrace.step`` and ``steptrace.persona`` of the innermost enclosing ones;
- a run, persona or step with a budget: ``steptrace.budget.max_tokens`` and
  ``steptrace.budget.max_usd`` (each only when that limit is set);
- a failed span: ``steptrace.error`` (the text steptrace recorded) and
  ``error.type`` (the exception class when the text starts with one, else
  ``_OTHER``).

Status: ``error`` when the steptrace span ended in error (a failed, skipped or
escalated step; a provider error on a request; a run or persona left by an
exception), with the recorded error as description; a tool span whose tool
raised or timed out (steptrace keeps the span ``ok`` and records
``steptrace.status = "error"``, since the model sees the error as the result)
is ``error`` too. Otherwise unset, as the conventions ask of instrumentation.

Values are made OpenTelemetry-legal: ``None`` is dropped; str, bool, int
(within int64) and float pass; enums give their value; a list or tuple of one
scalar type becomes a tuple of it, any other sequence a tuple of ``str``; a
mapping becomes its JSON text; anything else its ``str()``.

Agent events become span events named ``steptrace.<type>`` with the event's
fields as attributes (lists as tuples of ``str``).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from .._span_context import span_context
from ..spans import Span, SpanKind

if TYPE_CHECKING:
    from ..events import AgentEvent

__all__ = [
    "AttributeValue",
    "Described",
    "attribute_value",
    "describe",
    "describe_parts",
    "event_attributes",
    "event_name",
]

Scalar: TypeAlias = str | bool | int | float
AttributeValue: TypeAlias = (
    str
    | bool
    | int
    | float
    | tuple[str, ...]
    | tuple[bool, ...]
    | tuple[int, ...]
    | tuple[float, ...]
)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PASS_THROUGH = ("gen_ai.", "steptrace.")
_ERROR_TYPE = re.compile(r"([A-Za-z_][\w.]*)(?::|$)")


class Described(NamedTuple):
    """A span as OpenTelemetry sees it."""

    name: str
    client: bool
    """``True`` for a model request (span kind CLIENT), else INTERNAL."""
    attributes: dict[str, AttributeValue]
    error: str | None
    """The status description when the span is an error, else ``None``."""


def attribute_value(value: Any) -> AttributeValue | None:
    """``value`` as an OpenTelemetry attribute value, ``None`` to drop it."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool | float):
        return value
    if isinstance(value, str):
        return str(value)  # a str subclass becomes a plain str
    if isinstance(value, int):
        return int(value) if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return _sequence(list(value))
    if isinstance(value, Mapping):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _sequence(items: list[Any]) -> AttributeValue:
    kinds = {type(item) for item in items}
    if len(kinds) == 1:
        kind = kinds.pop()
        if kind is str or kind is bool or kind is float:
            return tuple(items)
        if kind is int and all(_INT64_MIN <= item <= _INT64_MAX for item in items):
            return tuple(items)
    return tuple(str(item) for item in items)


def _put(attributes: dict[str, AttributeValue], key: str, value: Any) -> None:
    legal = attribute_value(value)
    if legal is not None:
        attributes[key] = legal


def _budget(attributes: dict[str, AttributeValue], max_tokens: Any, max_usd: Any) -> None:
    _put(attributes, "steptrace.budget.max_tokens", max_tokens)
    _put(attributes, "steptrace.budget.max_usd", max_usd)


def describe(span: Span) -> Described:
    """Name, kind, attributes and error status of a live ``span`` (see the
    module docstring)."""
    return describe_parts(
        kind=span.kind.value,
        name=span.name,
        span_id=span.span_id,
        run_id=span.run_id,
        metadata=span.metadata,
        status=span.status,
        error=span.error,
        context=span_context(span),
    )


def describe_parts(
    *,
    kind: str,
    name: str,
    span_id: int,
    run_id: str,
    metadata: Mapping[str, Any],
    status: str,
    error: str | None,
    context: Mapping[str, Any],
) -> Described:
    """``describe`` from a span's fields and ``span_context`` facts: the same
    for a live span and for one read back from the run store."""
    attributes: dict[str, AttributeValue] = {
        "steptrace.span.kind": kind,
        "steptrace.span.id": span_id,
        "steptrace.run.id": run_id,
    }
    for key, value in metadata.items():
        _put(attributes, key if key.startswith(_PASS_THROUGH) else "steptrace." + key, value)
    failure = (error or "error") if status == "error" else None
    _budget(attributes, context.get("max_tokens"), context.get("max_usd"))
    if kind == SpanKind.STEP.value:
        attributes["steptrace.step"] = context.get("step", name)
        _put(attributes, "steptrace.function", context.get("function"))
        _put(attributes, "steptrace.error_boundary", context.get("error_boundary"))
        if attributes.get("gen_ai.operation.name") == "invoke_agent":
            # The agent layer describes its loop's step in the span's metadata.
            name = f"invoke_agent {attributes.get('gen_ai.agent.name', name)}"
    elif kind == SpanKind.RUN.value:
        for key, value in (context.get("run_metadata") or {}).items():
            _put(attributes, f"steptrace.run.metadata.{key}", value)
    elif kind != SpanKind.PERSONA.value:
        if "step" in context:
            attributes.setdefault("steptrace.step", context["step"])
        if "persona" in context:
            attributes.setdefault("steptrace.persona", context["persona"])
        if attributes.get("gen_ai.operation.name") == "invoke_agent":
            # An agent loop without a budget of its own opens a plain span.
            name = f"invoke_agent {attributes.get('gen_ai.agent.name', name)}"
        elif kind == SpanKind.LLM_CALL.value:
            operation = attributes.setdefault("gen_ai.operation.name", "chat")
            system = attributes.get("gen_ai.system")
            if system is not None:
                attributes.setdefault("gen_ai.provider.name", system)
            model = attributes.get("gen_ai.request.model")
            if isinstance(model, str):
                name = f"{operation} {model}"
        elif kind == SpanKind.TOOL.value:
            tool = attributes.get("gen_ai.tool.name")
            if not isinstance(tool, str):
                tool = name.removeprefix("tool ")
                attributes["gen_ai.tool.name"] = tool
            attributes["gen_ai.operation.name"] = "execute_tool"
            name = f"execute_tool {tool}"
            if failure is None and attributes.get("steptrace.status") == "error":
                failure = f"tool `{tool}` failed"
    if failure is not None:
        attributes["steptrace.error"] = failure
        match = _ERROR_TYPE.match(failure)
        attributes["error.type"] = match.group(1) if match else "_OTHER"
    return Described(name, kind == SpanKind.LLM_CALL.value, attributes, failure)


def event_name(event: AgentEvent) -> str:
    """``steptrace.<type>``, e.g. ``steptrace.tool_execution``."""
    return "steptrace." + event.type


def event_attributes(event: AgentEvent) -> dict[str, AttributeValue]:
    """The event's fields (``type`` aside) as attributes; lists as tuples of ``str``."""
    attributes: dict[str, AttributeValue] = {}
    for key, value in event.to_dict().items():
        if key == "type":
            continue
        if isinstance(value, list | tuple):
            attributes[key] = tuple(str(item) for item in value)
        else:
            _put(attributes, key, value)
    return attributes
