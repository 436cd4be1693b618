"""steptrace: hard spending limits and a faithful record for Python LLM agents.

Declare functions as steps (``@step``) with a default model, a token and USD
budget and an error boundary, group them under personas (``@persona``), record
every LLM call's usage into the active step (``record_llm_usage``), and read back
what happened: the completed-step ledger, typed agent events, the LLM trace log
and spans, all owned by a ``run()``. The core uses only the standard library;
integrations live in subpackages installed through extras.

The agent event types (``steptrace.events``) load on first use: they are frozen
dataclasses, and ``dataclasses`` with the eight class builds would double the
cost of ``import steptrace`` for programs that only use steps and budgets.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._accounting import (
    Hold,
    arecord_llm_usage,
    check_budget,
    record_llm_usage,
    release_budget_hold,
    reserve,
)
from ._config import configure
from ._context import ContextSnapshot, bind, restore_context, snapshot_context
from ._propagation import extract, inject
from ._run import CompletedStep, Run, TraceRecord, current_run, run
from ._shared import SharedBudget
from .budget import Budget, PriceSource, Usage
from .definitions import (
    ErrorBoundary,
    PersonaDefinition,
    StepDefinition,
    is_tracked_function,
    register_persona,
    register_persona_from_dict,
    register_step,
    register_step_from_dict,
    step_definition_for,
)
from .errors import (
    BudgetExhausted,
    PricingUnknown,
    StepTraceError,
    is_budget_exhausted,
    mark_escalated,
)
from .hooks import (
    Deny,
    HookContext,
    HookEvent,
    HookRegistration,
    RewriteArgs,
    RewriteOutput,
    StepDenied,
    clear_hooks,
    matching_hooks,
    on,
    register_persona_hook,
    register_step_hook,
    remove_hook,
)
from .runtime import (
    ActiveStep,
    active_step_model_default,
    current_persona_name,
    current_step,
    persona,
    reset,
    step,
)
from .spans import (
    InMemorySpanCollector,
    Span,
    SpanKind,
    SpanProcessor,
    add_span_processor,
    remove_span_processor,
)
from .tracing import (
    agent_trace_summary,
    current_span,
    emit_event,
    enable_tracing,
    peek_agent_trace,
    peek_trace,
    peek_trace_summary,
    span,
    take_agent_trace,
    take_trace,
)

__version__ = "0.1.0"

_FROM_EVENTS = frozenset(
    {
        "AgentEvent",
        "ContextCompaction",
        "LlmCall",
        "LlmTraceEntry",
        "LoopComplete",
        "LoopIntervention",
        "PhaseChange",
        "SchemaRetry",
        "ToolExecution",
        "ToolRejected",
        "event_from_dict",
        "summarize_events",
    }
)

if _TYPE_CHECKING:
    from .events import (
        AgentEvent,
        ContextCompaction,
        LlmCall,
        LlmTraceEntry,
        LoopComplete,
        LoopIntervention,
        PhaseChange,
        SchemaRetry,
        ToolExecution,
        ToolRejected,
        event_from_dict,
        summarize_events,
    )


def __getattr__(name: str) -> _Any:
    if name in _FROM_EVENTS:
        from . import events

        value = getattr(events, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'steptrace' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _FROM_EVENTS)


__all__ = [
    "ActiveStep",
    "AgentEvent",
    "Budget",
    "BudgetExhausted",
    "CompletedStep",
    "ContextCompaction",
    "ContextSnapshot",
    "Deny",
    "ErrorBoundary",
    "Hold",
    "HookContext",
    "HookEvent",
    "HookRegistration",
    "InMemorySpanCollector",
    "LlmCall",
    "LlmTraceEntry",
    "LoopComplete",
    "LoopIntervention",
    "PersonaDefinition",
    "PhaseChange",
    "PriceSource",
    "PricingUnknown",
    "RewriteArgs",
    "RewriteOutput",
    "Run",
    "SchemaRetry",
    "SharedBudget",
    "Span",
    "SpanKind",
    "SpanProcessor",
    "StepDefinition",
    "StepDenied",
    "StepTraceError",
    "ToolExecution",
    "ToolRejected",
    "TraceRecord",
    "Usage",
    "__version__",
    "active_step_model_default",
    "add_span_processor",
    "agent_trace_summary",
    "arecord_llm_usage",
    "bind",
    "check_budget",
    "clear_hooks",
    "configure",
    "current_persona_name",
    "current_run",
    "current_span",
    "current_step",
    "emit_event",
    "enable_tracing",
    "event_from_dict",
    "extract",
    "inject",
    "is_budget_exhausted",
    "is_tracked_function",
    "mark_escalated",
    "matching_hooks",
    "on",
    "peek_agent_trace",
    "peek_trace",
    "peek_trace_summary",
    "persona",
    "record_llm_usage",
    "register_persona",
    "register_persona_from_dict",
    "register_persona_hook",
    "register_step",
    "register_step_from_dict",
    "register_step_hook",
    "release_budget_hold",
    "remove_hook",
    "remove_span_processor",
    "reserve",
    "reset",
    "restore_context",
    "run",
    "snapshot_context",
    "span",
    "step",
    "step_definition_for",
    "summarize_events",
    "take_agent_trace",
    "take_trace",
]
