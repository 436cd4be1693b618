"""What the agent-framework integrations share: one model request's pre-flight,
span, event and usage; a framework run's tally; an agent's scope.

Both ``openai_agents`` and ``pydantic_ai`` reach the model through an async
interface that hands over the whole request before it is sent and the
response's usage after it arrives. ``ModelRequest`` is that request as
steptrace sees it: the worst case held on every active budget
(``steptrace.reserve``) before anything is sent, then a ``chat <model>`` span with
OpenTelemetry GenAI attributes, an ``LlmCall`` event and the hold settled
with the provider's real counts (cache reads and writes, reasoning tokens on
the span), priced once under ``price_name(model)`` (``steptrace.llm.conclusion``).

The prompt estimate needs no tokenizer: ``ceil(characters / 3)`` of every
string in the request (messages, instructions, tool definitions, the output
schema) plus 4 tokens an input item, an overestimate for text and code; binary
parts (images, audio) are not counted. The output bound is the request's
``max_tokens``, else ``steptrace.llm.DEFAULT_MAX_OUTPUT_TOKENS``. The worst
case is held on every limited scope until the response settles it.

``RunTally`` counts one framework run's model requests and tools and ends it
with a ``LoopComplete`` event; ``Scope`` runs a framework run inside a
steptrace step or persona (decorators from the public API), so its budget and
error boundary apply to everything the run does.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import steptrace
from steptrace import LoopComplete, SpanKind
from steptrace.llm import DEFAULT_MAX_OUTPUT_TOKENS
from steptrace.llm.conclusion import Concluded, TokenCounts, conclude

__all__ = [
    "ModelRequest",
    "RunTally",
    "Scope",
    "estimate_chars",
    "price_name",
    "run_status",
]

T = TypeVar("T")

CHARS_PER_TOKEN = 3
TOKENS_PER_ITEM = 4
_MAX_DEPTH = 12

_ROUTING_PREFIXES = ("litellm/", "any-llm/")
"""Prefixes that only choose a client library (OpenAI Agents' model providers)."""


_price_names: dict[str, str] = {}
_MAX_PRICE_NAMES = 1024


def price_name(model: str) -> str:
    """The name ``model`` is priced and recorded under.

    A routing prefix that only picks a client library goes (``litellm/``); a
    provider prefix written with a slash (``anthropic/claude-haiku-4-5``,
    LiteLLM's and OpenRouter's style) becomes the ``provider:model`` form the
    price table reads, so the model is priced as the one it names. Asked on
    every request for the few names a program uses: remembered.
    """
    name = _price_names.get(model)
    if name is None:
        if len(_price_names) >= _MAX_PRICE_NAMES:
            _price_names.clear()
        name = _price_names[model] = _price_name(model)
    return name


def _price_name(model: str) -> str:
    for prefix in _ROUTING_PREFIXES:
        if model.startswith(prefix):
            model = model[len(prefix) :]
            break
    provider, slash, rest = model.partition("/")
    if slash and provider and rest and ":" not in provider:
        return f"{provider}:{rest}"
    return model


_measured: dict[int, tuple[object, int]] = {}


def estimate_chars(value: Any, depth: int = 0) -> int:
    """Characters of every string inside ``value`` (mappings' values, sequences,
    objects' attributes); numbers and other scalars count their ``str``."""
    if type(value) is str:
        return len(value)
    if value is None or isinstance(value, bool | bytes | bytearray | memoryview):
        return 0
    if depth > _MAX_DEPTH:
        return 0
    depth += 1
    if isinstance(value, Mapping):
        return sum(estimate_chars(item, depth) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(estimate_chars(item, depth) for item in value)
    if isinstance(value, int | float):
        return len(str(value))
    attributes = getattr(value, "__dict__", None)
    if attributes is not None:
        return sum(
            estimate_chars(item, depth) for key, item in attributes.items() if key[:1] != "_"
        )
    return len(str(value))


def estimate_schema_chars(item: object, schema: Any) -> int:
    """``json.dumps(schema)``'s length, measured once per owning object (tool
    definitions are resent every turn). The cache entry holds the object, so
    its id is not reused while cached."""
    cached = _measured.get(id(item))
    if cached is not None and cached[0] is item:
        return cached[1]
    chars = len(json.dumps(schema, default=str)) if schema is not None else 0
    if len(_measured) > 4096:
        _measured.clear()
    _measured[id(item)] = (item, chars)
    return chars


def estimate_tokens(chars: int, items: int) -> int:
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_ITEM * items


class ModelRequest:
    """One model request: pre-flight at construction, then span, event, usage.

    The constructor holds the request's worst case on every limited scope
    (``steptrace.reserve``), or raises ``BudgetExhausted`` (or
    ``PricingUnknown``) when it cannot fit: the caller then sends nothing.
    The caller records ``conclude``'s result into the hold
    (``conclusion.arecord(concluded, request.hold)``), or releases it when
    the request failed (``hold.release``), so concurrent requests (parallel
    tools running agents) cannot overspend a scope.
    """

    __slots__ = (
        "estimate",
        "hold",
        "iteration",
        "max_output",
        "model",
        "started",
        "started_ns",
        "system",
    )

    def __init__(
        self, model: str, system: str, estimate: int, max_output: int | None, iteration: int
    ) -> None:
        self.model = model
        self.system = system
        self.estimate = estimate
        self.max_output = max_output if type(max_output) is int and max_output > 0 else None
        self.iteration = iteration
        self.hold = steptrace.reserve(model, estimate, self.max_output or DEFAULT_MAX_OUTPUT_TOKENS)
        self.started_ns = time.time_ns()
        self.started = time.perf_counter()

    def span(self) -> steptrace.span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": self.system,
            "gen_ai.request.model": self.model,
        }
        if self.max_output is not None:
            attributes["gen_ai.request.max_tokens"] = self.max_output
        if self.iteration:
            attributes["steptrace.agent.iteration"] = self.iteration
        return steptrace.span(f"chat {self.model}", kind=SpanKind.LLM_CALL, **attributes)

    def conclude(
        self,
        request_span: steptrace.Span,
        usage: TokenCounts | None,
        *,
        response_id: str | None,
        response_model: str | None,
        output_chars: int = 0,
    ) -> Concluded:
        """Conclude the request on its span (``conclusion.conclude``: priced
        once, ``LlmCall`` emitted); the caller records it into ``hold`` once
        the span ended, so a budget error is not the request's error. Without
        usage the pre-flight input estimate and the output's characters stand in."""
        return conclude(
            request_span.metadata,
            model=self.model,
            counts=usage or TokenCounts(self.estimate, -(-output_chars // CHARS_PER_TOKEN)),
            duration_ms=round((time.perf_counter() - self.started) * 1000),
            response_id=response_id,
            response_model=response_model,
            estimated=usage is None,
            iteration=self.iteration,
        )


# -- a framework run's tally ------------------------------------------------------


@dataclass(slots=True)
class RunTally:
    """One framework run's model requests and tools, for its ``LoopComplete``."""

    started: float = field(default_factory=time.perf_counter)
    iterations: int = 0
    tools_used: dict[str, None] = field(default_factory=dict)
    successful_tools: dict[str, None] = field(default_factory=dict)
    refused: bool = False
    """A ``continue`` step ended the run on a budget refusal."""
    owner: object = None
    """What records this run (when several could)."""
    """A ``continue`` step ended the run on a budget refusal."""

    def tool(self, name: str, ok: bool) -> None:
        self.tools_used.setdefault(name)
        if ok:
            self.successful_tools.setdefault(name)

    def complete(self, status: str) -> None:
        steptrace.emit_event(
            LoopComplete(
                status=status,
                iterations=self.iterations,
                total_duration_ms=round((time.perf_counter() - self.started) * 1000),
                tools_used=tuple(self.tools_used),
                successful_tools=tuple(self.successful_tools),
            )
        )


current_tally: contextvars.ContextVar[RunTally | None] = contextvars.ContextVar(
    "steptrace_framework_run", default=None
)
"""The framework run this context belongs to (set by each integration's run wrapper)."""


def run_status(
    error: BaseException | None, framework: Callable[[BaseException], str | None]
) -> str:
    """A run's ``LoopComplete`` status: ``done``, ``budget_exhausted``,
    ``cancelled``, what ``framework`` says of its own errors, else ``error``."""
    if error is None:
        return "done"
    if isinstance(error, steptrace.BudgetExhausted | steptrace.PricingUnknown):
        return "budget_exhausted"
    if isinstance(error, BaseException) and type(error).__name__ == "CancelledError":
        return "cancelled"
    return framework(error) or "error"


# -- an agent's scope -------------------------------------------------------------

ScopeKind = Literal["step", "persona"]


class Scope:
    """Runs a framework run as a steptrace step or persona.

    Built from the public decorators, once per agent: ``run(call)`` awaits
    ``call()`` inside the scope, so the budget counts everything the run does
    and a step's error boundary decides how a budget refusal ends it
    (``continue``: ``None`` is returned).
    """

    __slots__ = ("_run", "error_boundary", "kind", "name")

    def __init__(
        self,
        kind: ScopeKind,
        name: str,
        *,
        budget: Any,
        error_boundary: str,
        model: str | None,
        function: str,
    ) -> None:
        if kind not in ("step", "persona"):
            raise ValueError(f"scope kind must be 'step' or 'persona', got {kind!r}")

        async def scoped(call: Callable[[], Awaitable[Any]]) -> Any:
            return await call()

        # The ledger's `function` column names the framework's agent.
        scoped.__qualname__ = scoped.__name__ = function
        self.kind = kind
        self.name = name
        self.error_boundary = error_boundary if kind == "step" else "fail"
        if kind == "step":
            self._run: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] = steptrace.step(
                name, model=model, budget=budget, error_boundary=error_boundary
            )(scoped)
        else:
            if error_boundary != "fail":
                raise ValueError(
                    f"persona `{name}`: a persona has no error boundary; "
                    "use a step for `continue` or `escalate`"
                )
            self._run = steptrace.persona(name, budget=budget)(scoped)

    async def run(self, call: Callable[[], Awaitable[T]]) -> T | None:
        result: T | None = await self._run(call)
        return result
