"""The public surface is one sorted ``__all__``, frozen here so changes are deliberate."""

from __future__ import annotations

import importlib.metadata
import inspect
import types
from pathlib import Path

import steptrace

PUBLIC_NAMES = [
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


def test_all_is_sorted_and_unique() -> None:
    assert steptrace.__all__ == sorted(steptrace.__all__)
    assert len(set(steptrace.__all__)) == len(steptrace.__all__)


def test_every_name_resolves() -> None:
    missing = [name for name in steptrace.__all__ if not hasattr(steptrace, name)]
    assert missing == []
    for name in steptrace.__all__:
        assert getattr(steptrace, name) is not None, name


def test_public_surface_is_frozen() -> None:
    assert steptrace.__all__ == PUBLIC_NAMES


def test_no_public_name_outside_all() -> None:
    """Every public attribute (other than submodules) is listed in ``__all__``."""
    stray = [
        name
        for name, value in vars(steptrace).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in steptrace.__all__
    ]
    assert stray == []


def test_public_objects_come_from_the_package() -> None:
    for name in steptrace.__all__:
        value = getattr(steptrace, name)
        module = inspect.getmodule(value)
        if module is not None and (inspect.isclass(value) or inspect.isfunction(value)):
            assert module.__name__.startswith("steptrace"), name


def test_public_functions_are_fully_annotated() -> None:
    for name in steptrace.__all__:
        value = getattr(steptrace, name)
        if not inspect.isfunction(value):
            continue
        signature = inspect.signature(value)
        assert signature.return_annotation is not inspect.Signature.empty, name
        for parameter in signature.parameters.values():
            assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)


def test_version_and_py_typed() -> None:
    assert steptrace.__version__ == importlib.metadata.version("steptrace")
    assert steptrace.__file__ is not None
    assert (Path(steptrace.__file__).parent / "py.typed").is_file()
