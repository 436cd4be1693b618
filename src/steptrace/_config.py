"""Process-wide settings and the rule that observability never breaks a run.

Owns the ``strict`` switch, the configured price source and the one helper,
``report_observer_failure``, through which every hook, span processor and (later)
exporter failure passes: it logs on the ``steptrace`` logger, records the failure
on the span it happened under, and re-raises only in strict mode (for tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .budget import PriceSource
    from .spans import Span

OBSERVER_ERRORS_KEY = "steptrace.observer_errors"


class _Settings:
    __slots__ = ("price_source", "price_source_configured", "strict")

    def __init__(self) -> None:
        self.strict = False
        self.price_source: PriceSource | None = None
        self.price_source_configured = False
        """Whether ``configure`` set ``price_source`` (``None`` included); until
        then the first priced call looks for the default (``_pricing``)."""


settings = _Settings()

_UNSET: object = object()


def configure(
    *,
    strict: bool | None = None,
    price_source: PriceSource | object | None = _UNSET,
) -> None:
    """Set process-wide options; arguments left out keep their value.

    ``strict=True`` makes a failing hook or span processor raise instead of being
    logged and recorded (use it in tests). ``price_source`` prices calls recorded
    without an explicit ``cost_usd``; ``None`` removes it (no prices, not even
    the default genai-prices table, which is otherwise found on first need).
    """
    if strict is not None:
        if not isinstance(strict, bool):
            raise TypeError(f"configure: strict must be True or False, got {strict!r}")
        settings.strict = strict
    if price_source is not _UNSET:
        if price_source is not None and not callable(getattr(price_source, "cost_usd", None)):
            raise TypeError(
                "configure: price_source must have a cost_usd(model, input_tokens, "
                f"output_tokens, ...) method, got {price_source!r}"
            )
        settings.price_source = price_source  # type: ignore[assignment]
        settings.price_source_configured = True


def report_observer_failure(what: str, exc: BaseException, span: Span | None) -> None:
    """Log and record a failure of observability code; raise it in strict mode."""
    import logging  # deferred: ~4 ms at import, needed only when something failed

    logging.getLogger("steptrace").error("steptrace: %s failed: %r", what, exc, exc_info=exc)
    if span is not None:
        errors = span.metadata.setdefault(OBSERVER_ERRORS_KEY, [])
        if isinstance(errors, list):
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
    if settings.strict:
        raise exc
