"""The errors steptrace raises, in one tree.

::

    StepTraceError                 base of everything steptrace raises on purpose
    ├── BudgetExhausted            a step, persona or run budget ran out (seed dict shape)
    ├── PricingUnknown             a USD budget is in force and the model has no price
    ├── SharedPoolUnavailable      a shared budget's pool (Redis, PostgreSQL) cannot be reached
    ├── NoProviderConfigured       llm_call cannot tell which provider or model to use
    ├── SchemaValidationFailed     the model's output failed its schema on every attempt
    ├── CassetteError              a replay cassette is malformed (llm.providers.replay)
    ├── ReplayMissing              replay has no recorded answer for a request (same module)
    ├── ToolTimeout                an agent tool ran past its timeout (steptrace.agent)
    ├── StepDenied                 a PreStep hook denied the step (steptrace.hooks)
    └── ProviderError              a model provider refused or failed a request
        ├── AuthenticationFailed   bad or missing credentials (not retried)
        ├── BadRequest             the provider rejected the request (not retried)
        ├── RateLimited            429 / overloaded (retried with backoff)
        ├── ProviderTimeout        the request timed out (retried)
        └── ProviderUnavailable    connection failure or 5xx (retried)

Bad step, persona, hook or budget metadata raises the builtin ``ValueError`` or
``TypeError``, with a message naming the step (or persona) and the field, because
those are programming errors rather than runtime conditions.

``BudgetExhausted`` carries the seed's thrown-dict fields as attributes and gives
that dict back from ``to_dict()``. An escalated copy (``mark_escalated``) keeps
the fields, sets ``escalated`` and moves the category to ``handoff_escalation``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "BudgetExhausted",
    "NoProviderConfigured",
    "PricingUnknown",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "SchemaValidationFailed",
    "SharedPoolUnavailable",
    "StepTraceError",
    "is_budget_exhausted",
    "mark_escalated",
]

ScopeKind = Literal["step", "persona", "run"]
ErrorScope = Literal["step", "persona", "run", "shared"]
"""Whose budget an error names: a scope's, or a ``SharedBudget``'s (``shared``)."""
LimitName = Literal["max_tokens", "max_usd"]


class StepTraceError(Exception):
    """Base class of every error steptrace raises on purpose."""


class BudgetExhausted(StepTraceError):
    """A budget ran out: raised after the call that crossed it, or before a call
    whose worst case cannot fit (``preflight=True``).

    ``scope`` says whose budget it was (``step``, ``persona``, ``run``, or
    ``shared`` for a ``SharedBudget``); ``scope_name`` names that step, persona
    or run, or the shared budget's key. ``step`` and ``function``
    name the innermost step at the time, as in the seed.
    """

    def __init__(
        self,
        *,
        step: str,
        function: str,
        limit: LimitName,
        limit_value: float,
        consumed_tokens: float,
        consumed_cost_usd: float,
        error_boundary: str = "fail",
        scope: ErrorScope = "step",
        scope_name: str | None = None,
        preflight: bool = False,
        projected: float | None = None,
        category: str = "budget_exceeded",
        escalated: bool = False,
        message: str | None = None,
    ) -> None:
        self.category = category
        self.kind = "budget_exhausted"
        self.reason = f"{scope}_budget_exhausted"
        self.step = step
        self.function = function
        self.limit: LimitName = limit
        self.limit_value = float(limit_value)
        self.consumed_tokens = float(consumed_tokens)
        self.consumed_cost_usd = float(consumed_cost_usd)
        self.error_boundary = error_boundary
        self.scope: ErrorScope = scope
        self.scope_name = step if scope_name is None else scope_name
        self.preflight = preflight
        self.projected = projected
        self.escalated = escalated
        self.message = message if message is not None else self._default_message()
        super().__init__(self.message)

    def _default_message(self) -> str:
        who = f"{self.scope} `{self.scope_name}`"
        if self.limit == "max_tokens":
            used = f"{int(self.consumed_tokens)}"
            if self.preflight:
                return (
                    f"{who} cannot afford the next call within its max_tokens budget "
                    f"({used} used + {_fmt_tokens(self.projected)} worst case > "
                    f"{int(self.limit_value)})"
                )
            # The seed's exact wording for the token case.
            return f"{who} exceeded max_tokens budget ({used} > {int(self.limit_value)})"
        used_usd = _fmt_usd(self.consumed_cost_usd)
        if self.preflight:
            return (
                f"{who} cannot afford the next call within its max_usd budget "
                f"({used_usd} used + {_fmt_usd(self.projected)} worst case > "
                f"{_fmt_usd(self.limit_value)})"
            )
        return f"{who} exceeded max_usd budget ({used_usd} > {_fmt_usd(self.limit_value)})"

    def to_dict(self) -> dict[str, Any]:
        """The seed's thrown dict: exactly its keys for a step budget, plus
        ``escalated`` once escalated, ``scope``/``scope_name`` for persona and run
        budgets and ``preflight``/``projected`` for a refusal before a call."""
        out: dict[str, Any] = {
            "category": self.category,
            "kind": self.kind,
            "reason": self.reason,
            "step": self.step,
            "function": self.function,
            "limit": self.limit,
            "limit_value": self.limit_value,
            "consumed_tokens": self.consumed_tokens,
            "consumed_cost_usd": self.consumed_cost_usd,
            "error_boundary": self.error_boundary,
            "message": self.message,
        }
        if self.scope != "step":
            out["scope"] = self.scope
            out["scope_name"] = self.scope_name
        if self.preflight:
            out["preflight"] = True
            out["projected"] = self.projected
        if self.escalated:
            out["escalated"] = True
        return out

    def _replace(self, **changes: Any) -> BudgetExhausted:
        fields: dict[str, Any] = {
            "step": self.step,
            "function": self.function,
            "limit": self.limit,
            "limit_value": self.limit_value,
            "consumed_tokens": self.consumed_tokens,
            "consumed_cost_usd": self.consumed_cost_usd,
            "error_boundary": self.error_boundary,
            "scope": self.scope,
            "scope_name": self.scope_name,
            "preflight": self.preflight,
            "projected": self.projected,
            "category": self.category,
            "escalated": self.escalated,
            "message": self.message,
        }
        fields.update(changes)
        return BudgetExhausted(**fields)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor: rebuild from the attribute set so the error
        # survives pickling (process pools, multiprocessing queues).
        return (_rebuild_budget_exhausted, (self.to_dict() | {"scope": self.scope},))


def _rebuild_budget_exhausted(data: dict[str, Any]) -> BudgetExhausted:
    return BudgetExhausted(
        step=data["step"],
        function=data["function"],
        limit=data["limit"],
        limit_value=data["limit_value"],
        consumed_tokens=data["consumed_tokens"],
        consumed_cost_usd=data["consumed_cost_usd"],
        error_boundary=data["error_boundary"],
        scope=data["scope"],
        scope_name=data.get("scope_name"),
        preflight=data.get("preflight", False),
        projected=data.get("projected"),
        category=data["category"],
        escalated=data.get("escalated", False),
        message=data["message"],
    )


class PricingUnknown(StepTraceError):
    """A USD budget is in force but the model's price is unknown.

    Raised instead of counting the call as free. The tokens of a call that already
    happened are recorded before this is raised, so nothing is lost.
    """

    def __init__(self, model: str, *, scope: ErrorScope, scope_name: str) -> None:
        self.model = model
        self.scope: ErrorScope = scope
        self.scope_name = scope_name
        super().__init__(
            f"no price known for model {model!r}, and {scope} `{scope_name}` has a max_usd "
            "budget: add its price (steptrace.llm.PriceTable(overrides=...), with "
            "pip install 'steptrace[prices]'), configure another price source "
            "(steptrace.configure(price_source=...)), or pass cost_usd explicitly"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_pricing_unknown, (self.model, self.scope, self.scope_name))


def _rebuild_pricing_unknown(model: str, scope: ErrorScope, scope_name: str) -> PricingUnknown:
    return PricingUnknown(model, scope=scope, scope_name=scope_name)


class SharedPoolUnavailable(StepTraceError):
    """The pool holding a shared budget (Redis, PostgreSQL) could not be reached,
    or failed the operation.

    Shared budgets fail closed: no call is let through while a hard limit cannot
    be checked. ``url`` names the pool with any password masked; ``key`` is the
    shared budget's key.
    """

    def __init__(self, url: str, key: str, detail: str) -> None:
        self.url = url
        self.key = key
        self.detail = detail
        super().__init__(
            f"shared budget `{key}`: its pool {url} is unreachable or failed ({detail}); "
            "steptrace fails closed and refuses calls while a shared limit cannot be checked"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.key, self.detail))


class NoProviderConfigured(StepTraceError):
    """``llm_call`` has no model, or no provider it may use for the model.

    The message says what to configure; steptrace never falls back to the
    offline scripted provider silently."""


class SchemaValidationFailed(StepTraceError):
    """The output failed ``output_schema`` on the first attempt and every retry.

    ``errors`` holds each attempt's validation errors (attempt 0 first) and
    ``raw_text`` the last attempt's output."""

    def __init__(self, errors: list[list[str]], raw_text: str) -> None:
        self.errors = errors
        self.raw_text = raw_text
        last = "; ".join(errors[-1]) if errors else "no errors recorded"
        super().__init__(
            f"output failed its schema on all {len(errors)} attempt(s); last errors: {last}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors, self.raw_text))


class ProviderError(StepTraceError):
    """A provider refused or failed a request, translated at the boundary.

    ``retryable`` says whether ``llm_call`` retries it. The message never holds
    a credential: providers pass it through ``redact`` before raising."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_provider_error,
            (
                type(self),
                str(self),
                self.provider,
                self.model,
                self.status_code,
                self.request_id,
                self.retry_after,
            ),
        )


def _rebuild_provider_error(
    cls: type[ProviderError],
    message: str,
    provider: str,
    model: str | None,
    status_code: int | None,
    request_id: str | None,
    retry_after: float | None,
) -> ProviderError:
    return cls(
        message,
        provider=provider,
        model=model,
        status_code=status_code,
        request_id=request_id,
        retry_after=retry_after,
    )


class AuthenticationFailed(ProviderError):
    """Credentials missing, invalid or not allowed this model (401/403)."""


class BadRequest(ProviderError):
    """The provider rejected the request as malformed or unsupported (400/404/422)."""


class RateLimited(ProviderError):
    """Rate limited or overloaded (429, 529); retried after ``retry_after`` or backoff."""

    retryable = True


class ProviderTimeout(ProviderError):
    """The request timed out; retried."""

    retryable = True


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or failed (connection error, 5xx); retried."""

    retryable = True


def is_budget_exhausted(err: BaseException) -> bool:
    """True for a budget-exhausted error, escalated or not (the seed's test)."""
    return isinstance(err, BudgetExhausted)


def mark_escalated(
    err: BaseException, step: str | None = None, function: str | None = None
) -> BaseException:
    """Return an escalated copy of a budget-exhausted error; any other error is
    returned unchanged. ``step``/``function`` fill those fields only when empty."""
    if not isinstance(err, BudgetExhausted):
        return err
    escalated = err._replace(
        escalated=True,
        category="handoff_escalation",
        step=err.step or (step or ""),
        function=err.function or (function or ""),
    )
    escalated.__cause__ = err
    return escalated


def _fmt_usd(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "?"
    return f"${value:.6f}".rstrip("0").rstrip(".") if value else "$0"


def _fmt_tokens(value: float | None) -> str:
    return "?" if value is None else str(int(value))
