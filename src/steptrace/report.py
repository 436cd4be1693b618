"""Plain-text reports of a run for terminals: the ledger table and the totals.

``ledger_table(run)`` renders the completed-step ledger (one row a step: name,
persona, model, status, tokens, calls, cost, budget use, and the error under a
row that has one); ``totals_line(run)`` is the one-line cost summary. Used by
the examples and the CLI; no colour, no terminal control, standard library only.
"""

from __future__ import annotations

from typing import Protocol

from ._run import CompletedStep, Run

__all__ = ["ledger_table", "totals_line"]


class HasLedger(Protocol):
    """A live ``Run`` or a ``StoredRun`` read back from the run store."""

    @property
    def completed_steps(self) -> list[CompletedStep]: ...


def _budget_use(row: CompletedStep) -> str:
    if row.max_tokens is not None:
        return f"{row.total_tokens}/{row.max_tokens} tok"
    if row.max_usd is not None:
        return f"${row.cost_usd:.4f}/${row.max_usd:g}"
    return "-"


def ledger_table(run: HasLedger) -> str:
    """The run's completed-step ledger as an aligned text table."""
    header = (
        f"{'step':<20} {'persona':<10} {'model':<18} {'status':<9} "
        f"{'in':>6} {'out':>6} {'calls':>5} {'cost USD':>10} {'budget':>16}"
    )
    lines = [header, "-" * len(header)]
    for row in run.completed_steps:
        lines.append(
            f"{row.name:<20} {row.persona or '-':<10} {row.model or '-':<18} {row.status:<9} "
            f"{row.input_tokens:>6} {row.output_tokens:>6} {row.llm_calls:>5} "
            f"{row.cost_usd:>10.6f} {_budget_use(row):>16}"
        )
        if row.error:
            lines.append(f"{'':<20} -> {row.error}")
    return "\n".join(lines)


def totals_line(run: Run) -> str:
    """``run `name`: 12 LLM calls, 3,410 tokens in, 2,258 out, $0.007941``."""
    usage = run.usage()
    return (
        f"run `{run.name}` {run.status}: {usage.llm_calls} LLM calls, "
        f"{usage.input_tokens:,} tokens in, {usage.output_tokens:,} out, ${usage.cost_usd:.6f}"
    )
