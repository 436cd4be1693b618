"""steptrace for the OpenAI Agents SDK (``pip install 'steptrace[openai-agents]'``).

``instrument()`` (idempotent; ``uninstrument()`` undoes it) makes every run of
``Runner.run``, ``Runner.run_sync`` and ``Runner.run_streamed`` answer to the
active steptrace budgets and leave a record:

- each model request is checked before it is sent against every active budget
  (step, persona, run, shared pools) and not sent when its worst case cannot
  fit, then recorded from the response's usage (cached input and reasoning
  tokens included) and priced by the configured price source; a model name
  with a provider prefix (``litellm/anthropic/claude-haiku-4-5``) is priced as
  the model it names. Each request is a ``chat <model>`` span and an
  ``LlmCall`` event;
- agents, function tools, handoffs and guardrails are spans
  (``invoke_agent``, ``execute_tool``, ``handoff``, ``guardrail``), tools give
  ``ToolExecution`` (with the model's tool-call id) or ``ToolRejected``,
  handoffs ``PhaseChange``, and every run ends with ``LoopComplete``
  (``done``, ``budget_exhausted``, ``max_turns``, ``guardrail_tripped``,
  ``error`` or ``cancelled``);
- all of it works whether the SDK's own tracing is on or off, and leaves that
  tracing as it was.

``step(agent, budget=..., error_boundary=...)`` / ``persona(agent, budget=...)``
give an agent a scope without changing how it is run: every run that starts
with that agent (also as a tool of another agent, ``agent.as_tool``) runs
inside it. When the budget refuses a request, the run ends the way the step's
boundary says:

=============  ==================================================================
``fail``       ``Runner.run``/``run_sync`` raise ``BudgetExhausted``; a streamed
               run's ``stream_events()`` raises it
``escalate``   the same error, marked escalated (``OnHandoffEmitted`` fires)
``continue``   ``Runner.run``/``run_sync`` return ``None``; a streamed run's
               events stop and its ``final_output`` stays ``None``
=============  ==================================================================

The ledger row says ``failed``, ``escalated`` or ``skipped``. A handoff
continues the same run, so the agent handed to counts against the scope of
the agent the run started with; give a sub-agent a budget of its own by
calling it as a tool. A refusal inside a function tool (such a sub-agent's,
under ``fail`` or ``escalate``) meets the SDK's tool error handling: by
default the model is told the tool failed (``ToolExecution`` status
``error``) and the run goes on, each of its requests pre-flighted as usual.

Without ``instrument()`` nothing here is active; with it and no steptrace
budget in force, runs behave exactly as before.
"""

from __future__ import annotations

from typing import Any, TypeVar

try:
    import agents
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "steptrace.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'steptrace[openai-agents]'"
    ) from exc

from . import _agents_models, _agents_runs
from ._agents_common import Scope

__all__ = ["instrument", "is_instrumented", "persona", "step", "uninstrument"]

AgentT = TypeVar("AgentT", bound="agents.Agent[Any]")


def instrument() -> None:
    """Budget-check, account and trace every OpenAI Agents SDK run (idempotent)."""
    _agents_models.install()
    _agents_runs.install()


def uninstrument() -> None:
    """Undo ``instrument()`` (a no-op when it is not in effect)."""
    _agents_runs.uninstall()
    _agents_models.uninstall()


def is_instrumented() -> bool:
    """Whether ``instrument()`` is in effect."""
    return _agents_runs.installed()


def step(
    agent: AgentT,
    *,
    name: str | None = None,
    budget: Any = None,
    error_boundary: str = "fail",
    model: str | None = None,
) -> AgentT:
    """Run every run that starts with ``agent`` as a steptrace step.

    ``name`` defaults to the agent's name; ``budget`` and ``error_boundary`` are
    ``@steptrace.step``'s (bad values raise here, naming the step). Returns the
    agent. ``agent.clone()`` makes an agent without the scope.
    """
    return _assign(agent, "step", name, budget, error_boundary, model)


def persona(agent: AgentT, *, name: str | None = None, budget: Any = None) -> AgentT:
    """Run every run that starts with ``agent`` as a steptrace persona (hooks
    select it by ``name``, default the agent's name). Returns the agent."""
    return _assign(agent, "persona", name, budget, "fail", None)


def _assign(
    agent: AgentT,
    kind: Any,
    name: str | None,
    budget: Any,
    error_boundary: str,
    model: str | None,
) -> AgentT:
    if not isinstance(agent, agents.Agent):
        raise TypeError(f"openai_agents.{kind}: expected an agents.Agent, got {agent!r}")
    scope_name = name or agent.name
    scope = Scope(
        kind,
        scope_name,
        budget=budget,
        error_boundary=error_boundary,
        model=model,
        function=f"agents.Agent[{agent.name}]",
    )
    object.__setattr__(agent, _agents_runs.SCOPE_ATTRIBUTE, scope)
    return agent
