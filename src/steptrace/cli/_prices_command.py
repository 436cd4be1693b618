"""``steptrace prices MODEL``: what steptrace charges for a model, and where
the price comes from.

Prices are per million tokens, from the configured price table
(``steptrace.llm.prices``: the maintained genai-prices table plus overrides).
A rate the table does not list for the model (genai-prices gives no cache
write or reasoning price for many) is shown at the price it is charged, marked
"not listed". An unknown model is an error that suggests close model names
(``difflib`` over the table's model ids and the overrides) and shows how to
supply a price.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import TYPE_CHECKING, Any

from ._common import CliError, print_json
from ._render import Style, format_tokens, terminal_text, wants_colour

if TYPE_CHECKING:
    from ..llm.prices import PriceTable

__all__ = ["add_parser"]

EXAMPLES = """\
examples:
  steptrace prices gpt-4o-mini
  steptrace prices anthropic:claude-sonnet-4-5
  steptrace prices gpt-4o --json
"""

_RATES = (
    ("input_per_mtok", "input"),
    ("output_per_mtok", "output"),
    ("cache_read_per_mtok", "cache read"),
    ("cache_write_per_mtok", "cache write"),
    ("reasoning_per_mtok", "reasoning"),
)
_CHARGED_AS = {
    "cache_read_per_mtok": "input",
    "cache_write_per_mtok": "input",
    "reasoning_per_mtok": "output",
}
_HOW_TO_PRICE = """Supply a price (USD per million tokens) in the program, before its calls:
  from steptrace.llm import ModelPrice, install_default_prices
  install_default_prices(
      overrides={{{model!r}: ModelPrice(input_per_mtok=0.5, output_per_mtok=1.5)}},
      replace=True,
  )
or pass the call's cost yourself: steptrace.record_llm_usage(..., cost_usd=0.0012)."""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "prices",
        help="show a model's price per million tokens",
        description="Show the price steptrace uses for a model (USD per million tokens) "
        "and where it comes from.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a model id, optionally provider:model")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.set_defaults(handler=run_prices)


def run_prices(args: argparse.Namespace) -> int:
    from ..llm.prices import PriceTable, price_info

    try:
        info = price_info(args.model)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    if info is None:
        from .._config import settings

        source = settings.price_source
        table = source if isinstance(source, PriceTable) else None
        close = close_models(args.model, table)
        hint = f"\nClose model names: {', '.join(close)}" if close else ""
        how = _HOW_TO_PRICE.format(model=args.model)
        raise CliError(f"no price known for model {args.model!r}.{hint}\n{how}")
    if args.json:
        print_json(info)
        return 0
    style = Style(wants_colour(sys.stdout, args.color))
    matched = info["matched_model"]
    provider = info.get("provider")
    title = f"{style.paint(info['model'], 'bold')}"
    if matched and matched.lower() != str(info["model"]).lower():
        title += terminal_text(f" (priced as {matched})")
    facts = terminal_text(f"  provider {provider or '-'}  source {_source(info)}")
    print(f"{title}{facts}")
    print("USD per million tokens")
    unlisted = set(info.get("unlisted") or ())
    for key, label in _RATES:
        value = info.get(key)
        if value is not None:
            note = f"  (not listed: charged as {_CHARGED_AS[key]})" if key in unlisted else ""
            print(f"  {label:<12} {_price(value)}{note}")
    if info.get("per_request_usd"):
        print(f"  {'per request':<12} ${info['per_request_usd']:g}")
    for tier in info.get("tiers") or []:
        start = format_tokens(int(tier["above_input_tokens"]))
        rates = ", ".join(
            f"{label} {_price(tier[key])}" for key, label in _RATES[:2] if tier.get(key) is not None
        )
        print(f"  above {start} input tokens: {rates}")
    if info.get("time_dependent"):
        print(style.paint("  (the price depends on the time of the call; shown: now)", "dim"))
    return 0


def _price(usd: float) -> str:
    """``$0.15``, ``$0.60``, ``$0.075``, ``$15.00``: two decimals or as many as needed."""
    text = f"{usd:,.6f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"${whole}.{decimals.ljust(2, '0')}"


def _source(info: dict[str, Any]) -> str:
    if info.get("source") == "genai-prices" and info.get("genai_prices_version"):
        return f"genai-prices {info['genai_prices_version']}"
    return str(info.get("source"))


def close_models(model: str, table: PriceTable | None = None, *, n: int = 5) -> list[str]:
    """Known model ids most like ``model`` (the price table's and overrides)."""
    from ..llm.prices import PriceTable

    names = (table if table is not None else PriceTable()).known_models()
    query = model.strip().lower()
    _, sep, rest = query.partition(":")
    if sep and rest:
        query = rest
    by_lower = {name.lower(): name for name in names}
    found = difflib.get_close_matches(query, list(by_lower), n=n, cutoff=0.6)
    if not found:  # a fragment of a longer id: `sonnet-4`
        found = sorted(k for k in by_lower if query and query in k)[:n]
    return [by_lower[name] for name in found]
