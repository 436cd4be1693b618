"""Plain-text reports of a run for terminals: the ledger table and the totals.

``ledger_table(run)`` renders the completed-step ledger (one row a step: name,
persona, model, status, tokens, calls, cost, budget use, and the error under a
row that has one); ``totals_line(run)`` is the one-line cost summary. Used by
the examples and the CLI; no colour, no terminal control, standard library only.
A cost that leaves out calls of unknown price says so (``0.012000 + 2 unknown``,
or ``unknown`` when no call had a price): never a silent zero.
"""

from __future__ import annotations

import math
from typing import Protocol

from ._run import CompletedStep, Run

__all__ = ["cost_cell", "ledger_table", "totals_line", "unknown_cost_note"]


class HasLedger(Protocol):
    """A live ``Run`` or a ``StoredRun`` read back from the run store."""

    @property
    def completed_steps(self) -> list[CompletedStep]: ...


def _budget_use(row: CompletedStep) -> str:
    if row.max_tokens is not None:
        return f"{row.total_tokens}/{row.max_tokens} tok"
    if row.max_usd is not None:
        return f"{_spent(row.cost_usd)}/${row.max_usd:g}"
    return "-"


def _spent(usd: float) -> str:
    """``$0.000042``, ``$0.0125``, ``$0.50``: three significant digits below a
    dollar (trailing zeros dropped, at least two decimals), cents above."""
    if usd == 0:
        return "$0"
    if abs(usd) >= 1:
        return f"${usd:,.2f}"
    decimals = 2 - math.floor(math.log10(abs(usd)))
    whole, _, fraction = f"{usd:.{decimals}f}".partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def cost_cell(cost_usd: float, unpriced_calls: int, llm_calls: int) -> str:
    """A ledger cost: ``0.012000``, ``0.012000 + 2 unknown``, or ``unknown``
    when every call's price was unknown."""
    if not unpriced_calls:
        return f"{cost_usd:.6f}"
    if unpriced_calls >= llm_calls and not cost_usd:
        return "unknown"
    return f"{cost_usd:.6f} + {unpriced_calls} unknown"


def unknown_cost_note(unpriced_calls: int) -> str:
    """`` + 2 calls of unknown cost`` after a total (empty when all were priced)."""
    if not unpriced_calls:
        return ""
    return f" + {unpriced_calls} call{'s' if unpriced_calls != 1 else ''} of unknown cost"


_HEADERS = ("step", "persona", "model", "status", "in", "out", "calls", "cost USD", "budget")
_RIGHT = frozenset(range(4, 9))


def ledger_table(run: HasLedger) -> str:
    """The run's completed-step ledger as an aligned text table."""
    cells = [
        (
            row.name,
            row.persona or "-",
            row.model or "-",
            row.status,
            str(row.input_tokens),
            str(row.output_tokens),
            str(row.llm_calls),
            cost_cell(row.cost_usd, row.unpriced_calls, row.llm_calls),
            _budget_use(row),
        )
        for row in run.completed_steps
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(_HEADERS)]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            v.rjust(w) if i in _RIGHT else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    header = line(_HEADERS)
    lines = [header, "-" * len(header)]
    for row, values in zip(run.completed_steps, cells, strict=True):
        lines.append(line(values))
        if row.error:
            first, *rest = row.error.splitlines() or [""]
            lines.append(f"{'':<{widths[0]}} -> {first}{' ...' if rest else ''}")
    return "\n".join(lines)


def totals_line(run: Run) -> str:
    """``run `name`: 12 LLM calls, 3,410 tokens in, 2,258 out, $0.007941``, and
    `` + 2 calls of unknown cost`` when some had no known price."""
    usage = run.usage()
    return (
        f"run `{run.name}` {run.status}: {usage.llm_calls} LLM calls, "
        f"{usage.input_tokens:,} tokens in, {usage.output_tokens:,} out, ${usage.cost_usd:.6f}"
        f"{unknown_cost_note(usage.unpriced_calls)}"
    )
