"""A three-step research pipeline under a persona, with hard budgets, offline.

Each step talks to its own (simulated) model client, which checks the budget
before every call and reports the real usage afterwards through
``steptrace.record_llm_usage``. The summarizing step has
``error_boundary="continue"`` and a budget too small for every source: it runs
out partway, is recorded as ``skipped``, and the pipeline goes on without it.
At the end the completed-step ledger and the run summary are printed.

Run it with ``scripts/demo.sh`` (or ``python examples/budgeted_pipeline.py``).
"""

from __future__ import annotations

import json
import math
import uuid

import steptrace
from steptrace import LlmCall
from steptrace.report import ledger_table

# Illustrative list prices in USD per million tokens (input, output). The LLM
# layer brings a maintained table; this example keeps to the core.
PRICES_PER_MTOK = {
    "gpt-4o-mini": (0.15, 0.60),
    "claude-haiku-4-5": (1.00, 5.00),
    "gpt-4o": (2.50, 10.00),
}


class ExamplePrices:
    """A ``steptrace.PriceSource`` over the table above."""

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None:
        price = PRICES_PER_MTOK.get(model)
        if price is None:
            return None
        return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


class SimulatedModel:
    """A deterministic stand-in for a chat model client.

    Token counts follow the usual ~4 characters per token; the reply length
    depends only on the prompt, so every run of the demo prints the same ledger.
    """

    def __init__(self) -> None:
        self.iteration = 0

    def complete(self, prompt: str, *, max_output_tokens: int = 400) -> str:
        model = steptrace.active_step_model_default() or "gpt-4o-mini"
        input_tokens = math.ceil(len(prompt) / 4)
        # Refuse before sending anything if the worst case cannot fit.
        steptrace.check_budget(model, input_tokens, max_output_tokens)
        output_tokens = min(max_output_tokens, 120 + (sum(map(ord, prompt)) % 180))
        duration_ms = 300 + output_tokens * 9
        steptrace.record_llm_usage(model, input_tokens, output_tokens, duration_ms=duration_ms)
        self.iteration += 1
        steptrace.emit_event(
            LlmCall(
                call_id=uuid.uuid5(uuid.NAMESPACE_OID, prompt).hex[:12],
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_tokens=0,
                duration_ms=duration_ms,
                iteration=self.iteration,
            )
        )
        return f"[{model}: {output_tokens}-token answer to {prompt[:40]!r}...]"


client = SimulatedModel()

SOURCES = [
    "Quarterly report: revenue grew 12% on cloud demand; margins narrowed on hiring. " * 6,
    "Analyst call transcript: guidance raised, capex to double, supply constraints easing. " * 6,
    "Press coverage: two new regions announced, a pricing change for storage tiers. " * 6,
    "Competitor filing: price cuts in the mid-tier, a shift toward bundled support. " * 6,
    "Customer survey: satisfaction up, churn concentrated in small accounts. " * 6,
]


@steptrace.step(model="gpt-4o-mini", budget={"max_tokens": 6_000})
def collect_facts(topic: str) -> list[str]:
    """Pull the key facts out of each source."""
    return [client.complete(f"Extract facts about {topic} from: {source}") for source in SOURCES]


@steptrace.step(
    model="claude-haiku-4-5",
    budget={"max_tokens": 1_500},
    error_boundary="continue",
)
def summarize_sources(facts: list[str]) -> str:
    """Summarize every fact sheet; too many for this budget, so it is skipped."""
    summaries = [client.complete(f"Summarize for an executive: {fact}" * 3) for fact in facts]
    return "\n".join(summaries)


@steptrace.step(model="gpt-4o", budget={"max_usd": 0.05})
def write_brief(topic: str, facts: list[str], summary: str | None) -> str:
    """Write the brief, from the summary when there is one, else the raw facts."""
    basis = summary if summary is not None else "\n".join(facts)
    return client.complete(
        f"Write a one-page brief on {topic} using:\n{basis}", max_output_tokens=800
    )


@steptrace.persona(budget={"max_usd": 0.25})
def analyst(topic: str) -> str:
    facts = collect_facts(topic)
    summary = summarize_sources(facts)
    return write_brief(topic, facts, summary)


@steptrace.on("OnBudgetThreshold(80)", persona="analyst")
def warn_at_80_percent(context: steptrace.HookContext) -> None:
    print(
        f"  ! {context.scope} `{context.step or context.persona}` has used "
        f"{context.budget_pct:.0f}% of its budget"
    )


@steptrace.on("PostStep")
def report_step(context: steptrace.HookContext) -> None:
    print(f"  - step `{context.step}` {context.status}: {context.usage.total_tokens} tokens")


def main() -> None:
    steptrace.configure(price_source=ExamplePrices())
    with steptrace.run("market-brief", budget={"max_usd": 1.0}) as run:
        print(f"run {run.id}: researching 'cloud provider Q3'")
        brief = analyst("cloud provider Q3")
    print(f"\nbrief: {brief}\n")
    print("completed-step ledger")
    print(ledger_table(run))
    print("\nrun summary")
    print(json.dumps(run.summary(), indent=2))


if __name__ == "__main__":
    main()
