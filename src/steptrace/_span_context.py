"""What a span's frame knows beyond the span itself, as plain data.

A live span is a frame: a step span knows its definition (function, error
boundary, budget), a persona or run span its budget, any span the step and
persona enclosing it. Exporters describe spans with these facts, and the run
store keeps them next to each span so a stored span is described exactly as
the live one was. ``span_context(span)`` is that one flat, JSON-ready dict
(keys absent when they do not apply):

- ``step``, ``persona``: the innermost enclosing step and persona (a step's
  own name for a step span; a persona span names no persona);
- ``function``, ``error_boundary``: a step's;
- ``max_tokens``, ``max_usd``: the budget of a step, persona or run span;
- ``run_metadata``: the run's metadata, on the run's root span.
"""

from __future__ import annotations

from typing import Any

from ._context import Frame, PersonaFrame, StepFrame
from .spans import Span, SpanKind

__all__ = ["span_context"]


def span_context(span: Span) -> dict[str, Any]:
    """The frame facts of ``span`` (see the module docstring); ``{}`` for a
    span that is not a frame and a frame with nothing to add."""
    context: dict[str, Any] = {}
    if isinstance(span, StepFrame):
        definition = span.definition
        context["step"] = definition.name
        context["function"] = definition.function
        context["error_boundary"] = definition.error_boundary.value
        _limits(context, definition.max_tokens, definition.max_usd)
    elif isinstance(span, PersonaFrame):
        budget = span.definition.budget
        if budget is not None:
            _limits(context, budget.max_tokens, budget.max_usd)
    elif span.kind is SpanKind.RUN and isinstance(span, Frame) and span.run.root is span:
        run = span.run
        if run.budget is not None:
            _limits(context, run.budget.max_tokens, run.budget.max_usd)
        if run.metadata:
            context["run_metadata"] = dict(run.metadata)
    elif isinstance(span, Frame):
        step = span.step
        if step is not None:
            context["step"] = step.name
        persona = span.persona
        if persona is not None:
            context["persona"] = persona.name
    return context


def _limits(context: dict[str, Any], max_tokens: int | None, max_usd: float | None) -> None:
    if max_tokens is not None:
        context["max_tokens"] = max_tokens
    if max_usd is not None:
        context["max_usd"] = max_usd
