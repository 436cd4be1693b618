"""Model prices: the maintained ``genai-prices`` table as steptrace's price source.

This module owns turning a model id and token counts into US dollars.
``PriceTable`` implements the core's ``PriceSource`` protocol over the table
bundled with ``genai-prices`` (extra ``steptrace[prices]``), with per-model
overrides and additions (``ModelPrice``) that win over the table;
``install_default_prices`` makes it the configured price source, and
``price_info`` describes what a model id resolves to (for ``steptrace prices
MODEL``).

Conventions, the same as the core's and genai-prices': ``input_tokens`` counts
every prompt token, cached ones included; ``cache_read_tokens`` and
``cache_write_tokens`` say how many of them were read from or written to the
provider's prompt cache, and ``reasoning_tokens`` how many of the
``output_tokens`` were reasoning. A model id may carry a provider prefix
(``openai:gpt-4o``, ``anthropic:claude-haiku-4-5``, aliases such as
``bedrock:`` or ``google-gla:`` included); the prefix then restricts the lookup
to that provider. A text before ``:`` that is no provider genai-prices knows
stays part of the model id (``ft:gpt-4o-mini:org::id``).

What is unknown stays unknown, never a silent zero: ``cost_usd`` returns
``None`` for a model the table does not match, for a model whose entry carries
no token prices (genai-prices lists some retired models and subscription-only
offerings that way), and for a call with input (output) tokens when the entry
has no input (output) price. A free model is one you say is free:
``PriceTable(overrides={"my-local-model": ModelPrice(0.0, 0.0)})``.

Speed and safety: the table (and pydantic, which it uses) loads on first use,
not at import. Each model id's lookup is resolved once into float rates per
million tokens and cached (tiered prices pre-split at their thresholds), so a
repeated ``cost_usd`` is a dict hit and a few multiplications. Prices that
depend on the time of day (DeepSeek's off-peak hours) are re-selected on each
call. Nothing here starts genai-prices' ``UpdatePrices`` background updater or
touches the network; if you start that updater yourself, every ``PriceTable``
notices the new snapshot and re-resolves.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo
    from genai_prices.types import ModelPrice as _GenaiModelPrice

__all__ = ["ModelPrice", "PriceTable", "install_default_prices", "price_info"]

INSTALL_HINT: Final = "steptrace's price table needs genai-prices: pip install 'steptrace[prices]'"
_PER_MTOK: Final = 1_000_000.0
_MAX_CACHED_MODELS: Final = 1024


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A model's price in USD per million tokens, for ``PriceTable(overrides=...)``.

    ``cache_read_per_mtok`` and ``cache_write_per_mtok`` default to the input
    price (a provider without prompt caching bills cached tokens as input).
    Every price must be a finite number >= 0.
    """

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok"):
            object.__setattr__(self, name, _check_price("ModelPrice", name, getattr(self, name)))
        for name in ("cache_read_per_mtok", "cache_write_per_mtok"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_price("ModelPrice", name, value))


_MODEL_PRICE_FIELDS: Final = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_read_per_mtok",
    "cache_write_per_mtok",
)


def _check_price(owner: str, name: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        from decimal import Decimal  # not at import: only a Decimal price needs it

        if not isinstance(value, Decimal):
            raise TypeError(
                f"{owner}: {name} must be a number >= 0 (USD per million tokens), got {value!r}"
            )
        number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")
    return number


def _coerce_override(model: object, price: object) -> tuple[str, ModelPrice]:
    """Validate one ``overrides`` item; every error names the model (and the field)."""
    if not isinstance(model, str) or not model.strip():
        raise TypeError(f"PriceTable: override keys must be non-empty model ids, got {model!r}")
    owner = f"PriceTable override for model {model!r}"
    if isinstance(price, ModelPrice):
        return model.strip().lower(), price
    if not isinstance(price, Mapping):
        raise TypeError(f"{owner}: expected a ModelPrice or a dict of its fields, got {price!r}")
    unknown = sorted(str(key) for key in set(price) - set(_MODEL_PRICE_FIELDS))
    if unknown:
        raise ValueError(
            f"{owner}: unknown field(s) {unknown}; expected {list(_MODEL_PRICE_FIELDS)}"
        )

    def field(name: str, required: bool) -> float | None:
        value = price.get(name)
        if value is None:
            if required:
                raise ValueError(f"{owner}: {name} is required")
            return None
        return _check_price(owner, name, value)

    input_price = field("input_per_mtok", True)
    output_price = field("output_per_mtok", True)
    return model.strip().lower(), ModelPrice(
        input_price or 0.0,
        output_price or 0.0,
        field("cache_read_per_mtok", False),
        field("cache_write_per_mtok", False),
    )


class _Rates:
    """Prices of one model at one tier, per million tokens (``per_request`` in USD)."""

    __slots__ = (
        "cache_read",
        "cache_write",
        "complete",
        "input",
        "known_input",
        "known_output",
        "output",
        "per_request",
        "reasoning",
        "tiers",
        "unlisted",
    )

    def __init__(
        self,
        input: float | None,
        output: float | None,
        cache_read: float | None = None,
        cache_write: float | None = None,
        reasoning: float | None = None,
        per_request: float = 0.0,
    ) -> None:
        self.known_input = input is not None
        self.known_output = output is not None
        self.complete = self.known_input and self.known_output
        self.input = 0.0 if input is None else input
        self.output = 0.0 if output is None else output
        self.cache_read = self.input if cache_read is None else cache_read
        self.cache_write = self.input if cache_write is None else cache_write
        self.reasoning = self.output if reasoning is None else reasoning
        # Rates the source does not give, charged at their parent kind's price.
        self.unlisted = tuple(
            name
            for name, value in (
                ("cache_read_per_mtok", cache_read),
                ("cache_write_per_mtok", cache_write),
                ("reasoning_per_mtok", reasoning),
            )
            if value is None
        )
        self.per_request = per_request
        self.tiers: tuple[tuple[int, _Rates], ...] = ()
        """(threshold, rates) ascending: ``rates`` apply when input_tokens > threshold."""

    def as_dict(self) -> dict[str, Any]:
        """The rates; ``unlisted`` names those the source does not list (shown
        at the price they are charged: cache at input's, reasoning at output's)."""
        return {
            "input_per_mtok": self.input if self.known_input else None,
            "output_per_mtok": self.output if self.known_output else None,
            "cache_read_per_mtok": self.cache_read if self.known_input else None,
            "cache_write_per_mtok": self.cache_write if self.known_input else None,
            "reasoning_per_mtok": self.reasoning if self.known_output else None,
            "per_request_usd": self.per_request,
            "unlisted": list(self.unlisted),
        }


class _Entry:
    """What one model id resolved to. ``rates`` is None when the price depends
    on the time of the call; ``current_rates`` then selects it."""

    __slots__ = ("_last", "info", "model_id", "provider", "rates", "source")

    def __init__(
        self,
        rates: _Rates | None,
        *,
        source: str,
        provider: str | None,
        model_id: str,
        info: ModelInfo | None = None,
    ) -> None:
        self.rates = rates
        self.source = source
        self.provider = provider
        self.model_id = model_id
        self.info = info
        self._last: tuple[_GenaiModelPrice, _Rates] | None = None

    def current_rates(self) -> _Rates:
        if self.rates is not None:
            return self.rates
        assert self.info is not None
        model_price = self.info.get_prices(_now())
        last = self._last
        if last is not None and last[0] is model_price:
            return last[1]
        rates = _rates_from_genai(model_price)
        self._last = (model_price, rates)
        return rates


_UNKNOWN: Final = _Entry(_Rates(None, None), source="unknown", provider=None, model_id="")
_GENAI_KEYS: Final = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "output_reasoning_mtok",
    "requests_kcount",
)


def _rates_from_genai(model_price: _GenaiModelPrice) -> _Rates:
    """Float rates from a genai-prices ``ModelPrice``, tiers split at their thresholds.

    genai-prices' tiers are "cliffs" on the call's total input tokens: over a
    threshold the tier's price applies to all the tokens of that kind. A kind
    the model has no price for is billed as its parent kind (cache reads as
    input, reasoning as output), as genai-prices does."""
    from genai_prices.types import TieredPrices

    raw = [getattr(model_price, key, None) for key in _GENAI_KEYS]

    def at(total_input: int) -> _Rates:
        prices: list[float | None] = []
        for value in raw:
            if value is None:
                prices.append(None)
                continue
            price = value.base if isinstance(value, TieredPrices) else value
            if isinstance(value, TieredPrices):
                for tier in reversed(value.tiers):
                    if total_input > tier.start:
                        price = tier.price
                        break
            prices.append(float(price))
        inp, out, cache_read, cache_write, reasoning, per_k_requests = prices
        per_request = 0.0 if per_k_requests is None else per_k_requests / 1000.0
        return _Rates(inp, out, cache_read, cache_write, reasoning, per_request)

    base = at(0)
    starts = sorted(
        {tier.start for value in raw if isinstance(value, TieredPrices) for tier in value.tiers}
    )
    base.tiers = tuple((start, at(start + 1)) for start in starts)
    return base


def _rates_from_override(price: ModelPrice) -> _Rates:
    return _Rates(
        price.input_per_mtok,
        price.output_per_mtok,
        price.cache_read_per_mtok,
        price.cache_write_per_mtok,
    )


def _is_static(info: ModelInfo) -> bool:
    """Whether the model's prices no longer change with the time of the call:
    one price, or dated prices whose start dates have all passed."""
    from genai_prices.types import ModelPrice as GenaiModelPrice
    from genai_prices.types import StartDateConstraint

    if isinstance(info.prices, GenaiModelPrice):
        return True
    now = _now()
    return all(
        conditional.constraint is None
        or (
            isinstance(conditional.constraint, StartDateConstraint)
            and conditional.constraint.active(now)
        )
        for conditional in info.prices
    )


def _now() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(tz=UTC)


class PriceTable:
    """``PriceSource`` over the genai-prices table, with your overrides on top.

    ``overrides`` maps a model id to a ``ModelPrice`` (or a dict of its fields,
    as read from a config file). An override key matches, most specific first:
    the model id as given (``"openai:gpt-4o"``, ``"my-local-model"``), the id
    after a ``prefix:`` (``"llama3"`` for ``"ollama:llama3"``), then the table
    entry the id resolves to (``"openai:gpt-4o"`` or ``"gpt-4o"`` also cover
    ``"gpt-4o-2024-08-06"``, which the table prices as gpt-4o). Keys are
    case-insensitive. A ``prefix:`` that is no provider genai-prices knows
    (``ollama:``) never matches a table entry: a local model is not priced as
    a cloud one; give it an override.

    Thread-safe; the table loads on first use. Raises ``ImportError`` when
    genai-prices is not installed.
    """

    def __init__(
        self, overrides: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None
    ) -> None:
        import importlib.util

        if importlib.util.find_spec("genai_prices") is None:
            raise ImportError(INSTALL_HINT)
        if overrides is not None and not isinstance(overrides, Mapping):
            raise TypeError(
                f"PriceTable: overrides must be a dict of model id -> ModelPrice, got {overrides!r}"
            )
        self._overrides: dict[str, ModelPrice] = {}
        for model, price in (overrides or {}).items():
            key, value = _coerce_override(model, price)
            if key in self._overrides:
                raise ValueError(
                    f"PriceTable: model {model!r} is overridden twice (keys are case-insensitive)"
                )
            self._overrides[key] = value
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._snapshot: DataSnapshot | None = None
        self._get_snapshot: Callable[[], DataSnapshot] | None = None

    @property
    def overrides(self) -> Mapping[str, ModelPrice]:
        """The overrides, keyed by lower-cased model id."""
        from types import MappingProxyType

        return MappingProxyType(self._overrides)

    def __repr__(self) -> str:
        return f"PriceTable(overrides={sorted(self._overrides)!r})"

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> float | None:
        """The call's cost in USD, or ``None`` when its price is unknown.

        ``cache_read_tokens`` and ``cache_write_tokens`` are part of
        ``input_tokens``, ``reasoning_tokens`` part of ``output_tokens``; a
        count larger than the total it belongs to is a ``ValueError``."""
        get_snapshot = self._get_snapshot
        if get_snapshot is not None and get_snapshot() is not self._snapshot:
            self._cache = {}  # someone installed a new genai-prices snapshot
        entry = self._cache.get(model)
        if entry is None:
            entry = self._resolve(model)
        if entry is _UNKNOWN:
            return None
        rates = entry.rates or entry.current_rates()
        if rates.tiers:
            for start, tier in reversed(rates.tiers):
                if input_tokens > start:
                    rates = tier
                    break
        plain_input = input_tokens - cache_read_tokens - cache_write_tokens
        plain_output = output_tokens - reasoning_tokens
        # The bitwise or of ints is negative exactly when one of them is.
        if plain_input < 0 or plain_output < 0 or (cache_read_tokens | cache_write_tokens) < 0:
            _bad_counts(
                model,
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                reasoning_tokens,
            )
        if not rates.complete and (
            (input_tokens and not rates.known_input)
            or (output_tokens and not rates.known_output)
            or not (rates.known_input or rates.known_output)
        ):
            return None
        return (
            plain_input * rates.input
            + cache_read_tokens * rates.cache_read
            + cache_write_tokens * rates.cache_write
            + plain_output * rates.output
            + reasoning_tokens * rates.reasoning
        ) / _PER_MTOK + rates.per_request

    def price_info(self, model: str) -> dict[str, Any] | None:
        """What ``model`` resolves to and its prices per million tokens, or
        ``None`` when unknown. JSON-ready: floats, strings, lists, None."""
        if not isinstance(model, str):
            raise TypeError(f"price_info: model must be a string, got {model!r}")
        entry = self._resolve(model)
        if entry is _UNKNOWN:
            return None
        rates = entry.current_rates()
        if not (rates.known_input or rates.known_output):
            return None
        info: dict[str, Any] = {
            "model": model,
            "provider": entry.provider,
            "matched_model": entry.model_id,
            "source": entry.source,
            **rates.as_dict(),
            "tiers": [
                {"above_input_tokens": start, **tier.as_dict()} for start, tier in rates.tiers
            ],
            "time_dependent": entry.rates is None,
        }
        if entry.source == "genai-prices":
            from importlib.metadata import version

            info["genai_prices_version"] = version("genai-prices")
        return info

    def known_models(self) -> list[str]:
        """Every model id this table can price: its overrides and, when
        genai-prices is installed, the ids in its data, sorted."""
        names = set(self.overrides)
        try:
            snapshot = self._load()
        except ImportError:
            pass
        else:
            names.update(m.id for provider in snapshot.providers for m in provider.models)
        return sorted(names)

    # --- resolution (the slow path: once per model id) -------------------------

    def _load(self) -> DataSnapshot:
        try:
            from genai_prices import data_snapshot
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        snapshot = data_snapshot.get_snapshot()
        if snapshot is not self._snapshot:
            self._cache = {}
            self._snapshot = snapshot
        self._get_snapshot = data_snapshot.get_snapshot
        return snapshot

    def _resolve(self, model: str) -> _Entry:
        with self._lock:
            snapshot = self._load()
            cache = self._cache
            entry = cache.get(model)
            if entry is None:
                entry = self._lookup(model, snapshot)
                while len(cache) >= _MAX_CACHED_MODELS:
                    del cache[next(iter(cache))]
                cache[model] = entry
            return entry

    def _lookup(self, model: str, snapshot: DataSnapshot) -> _Entry:
        from genai_prices.data_snapshot import find_provider_by_id

        overrides = self._overrides
        key = model.strip().lower()
        if not key:
            return _UNKNOWN
        prefix, sep, rest = key.partition(":")
        provider = (
            find_provider_by_id(snapshot.providers, prefix) if sep and prefix and rest else None
        )
        provider_id = None if provider is None else provider.id
        if key in overrides:
            return self._override_entry(key, provider_id)
        if rest and rest in overrides:
            return self._override_entry(rest, provider_id)
        model_ref = key if provider is None else rest
        try:
            found_provider, info = snapshot.find_provider_model(model_ref, None, provider_id, None)
        except LookupError:
            return _UNKNOWN
        for candidate in (f"{found_provider.id}:{info.id}".lower(), info.id.lower()):
            if candidate in overrides:
                return self._override_entry(candidate, found_provider.id)
        static = _is_static(info)
        rates = _rates_from_genai(info.get_prices(_now())) if static else None
        return _Entry(
            rates,
            source="genai-prices",
            provider=found_provider.id,
            model_id=info.id,
            info=None if static else info,
        )

    def _override_entry(self, key: str, provider: str | None) -> _Entry:
        return _Entry(
            _rates_from_override(self._overrides[key]),
            source="override",
            provider=provider,
            model_id=key,
        )


def _bad_counts(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    reasoning: int,
) -> NoReturn:
    where = f"PriceTable.cost_usd({model!r})"
    for name, value in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("cache_read_tokens", cache_read),
        ("cache_write_tokens", cache_write),
        ("reasoning_tokens", reasoning),
    ):
        if value < 0:
            raise ValueError(f"{where}: {name} must be >= 0, got {value}")
    if reasoning > output_tokens:
        raise ValueError(
            f"{where}: reasoning_tokens ({reasoning}) cannot exceed output_tokens "
            f"({output_tokens}); output_tokens counts reasoning tokens too"
        )
    raise ValueError(
        f"{where}: cache_read_tokens + cache_write_tokens ({cache_read} + {cache_write}) "
        f"cannot exceed input_tokens ({input_tokens}); input_tokens counts cached tokens too"
    )


def install_default_prices(
    *,
    overrides: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None,
    replace: bool = False,
) -> PriceTable | None:
    """Make a ``PriceTable`` steptrace's configured price source.

    Keeps a price source already configured unless ``replace`` is true. Returns
    the table installed, or ``None`` when nothing was installed: a source was
    already configured, or genai-prices is not installed (calls recorded
    without ``cost_usd`` under a USD budget then raise ``PricingUnknown``).
    Cheap: the table itself loads on the first priced call.
    """
    from .._config import configure, settings

    if settings.price_source is not None and not replace:
        return None
    try:
        table = PriceTable(overrides)
    except ImportError:
        if overrides:
            raise
        return None
    configure(price_source=table)
    return table


def price_info(model: str, *, table: PriceTable | None = None) -> dict[str, Any] | None:
    """``table.price_info(model)``; by default the configured price source when it
    is a ``PriceTable``, else a plain ``PriceTable()``."""
    if table is None:
        from .._config import settings

        source = settings.price_source
        table = source if isinstance(source, PriceTable) else PriceTable()
    return table.price_info(model)
