"""A multi-step research run on the built-in offline provider, under hard budgets.

An ``analyst`` persona (capped at $0.10) plans research questions (a structured
output that the model first gets wrong, so ``llm_call`` re-prompts it), answers
each question in its own budgeted step, tries to condense the answers in a step
whose budget is too small (``error_boundary="continue"``: it is skipped and the
run goes on), and writes the brief. Every call goes through ``llm_call`` to the
scripted provider, priced from the maintained price table, so the ledger shows
what these calls would cost. It prints a line per finished step, then the
ledger, the agent-event summary and the cost.

Run it with ``scripts/demo.sh``. With ``OPENAI_API_KEY`` set and ``--live``, the
same pipeline runs against OpenAI instead.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import steptrace
from steptrace import llm
from steptrace.llm import LlmRequest
from steptrace.llm.prices import install_default_prices
from steptrace.report import ledger_table, totals_line


@dataclass
class Plan:
    questions: list[str]


def offline_model(request: LlmRequest) -> str:
    """The scripted provider's answers: a plausible reply for each step."""
    step = steptrace.current_step()
    prompt = request.messages[-1].content
    if step is None:
        return "ok"
    if step.name == "plan_research":
        if "did not match the required output schema" not in prompt:
            return "Good idea! I would look at adoption, costs and the main risks."
        return json.dumps(
            {
                "questions": [
                    "How fast are home batteries being adopted, and where?",
                    "What does a 10 kWh installation cost in 2026, all in?",
                    "Which risks (fire codes, supply, grid rules) slow deployments?",
                ]
            }
        )
    if step.name == "answer_question":
        return (
            f"On '{prompt[:60]}': installations grew steadily through 2025, led by "
            "markets with time-of-use tariffs; costs fell with cheaper LFP cells while "
            "labour and permitting stayed flat, and grid-connection rules remain the "
            "main source of delay. " * 3
        )
    if step.name == "condense":
        return "Adoption up, costs down, permitting is the bottleneck."
    return (
        "Home battery storage, 2026: adoption keeps rising where tariffs reward "
        "shifting load; an all-in 10 kWh system costs markedly less than in 2023; "
        "permitting and grid rules, not hardware, set the pace."
    )


@steptrace.step(model="gpt-4o-mini", budget={"max_tokens": 4_000})
def plan_research(topic: str) -> Plan:
    result = llm.llm_call(
        f"Plan research on {topic}: list the three questions to answer.",
        output_schema=Plan,
        max_tokens=300,
    )
    plan: Plan = result.data
    return plan


@steptrace.step(model="gpt-4o-mini", budget={"max_tokens": 1_500})
def answer_question(question: str) -> str:
    return llm.llm_call(question, system="Answer in one dense paragraph.", max_tokens=400).text


@steptrace.step(model="claude-haiku-4-5", budget={"max_tokens": 900}, error_boundary="continue")
def condense(answers: list[str]) -> str:
    joined = "\n\n".join(answers)
    return llm.llm_call(f"Condense into three bullet points:\n{joined}", max_tokens=300).text


@steptrace.step(model="gpt-4o", budget={"max_usd": 0.02})
def write_brief(topic: str, notes: str) -> str:
    return llm.llm_call(f"Write a five-line brief on {topic} from:\n{notes}", max_tokens=300).text


@steptrace.persona(budget={"max_usd": 0.10})
def analyst(topic: str) -> str:
    plan = plan_research(topic)
    answers = [answer_question(q) for q in plan.questions]
    summary = condense(answers)  # None when its budget runs out
    return write_brief(topic, summary if summary is not None else "\n".join(answers))


@steptrace.on("PostStep")
def progress(context: steptrace.HookContext) -> None:
    print(
        f"  {context.status:<9} {context.step:<16} "
        f"{context.usage.total_tokens:>6} tokens  ${context.usage.cost_usd:.5f}"
    )


def main() -> None:
    install_default_prices()
    if "--live" in sys.argv:
        print("live: calls go to OpenAI (OPENAI_API_KEY)")
    else:
        llm.configure(provider=llm.ScriptedProvider(offline_model))
    topic = "home battery storage"
    with steptrace.run("research-brief", budget={"max_usd": 0.50}) as run:
        print(f"run {run.id}: {topic}")
        brief = analyst(topic)
    print(f"\nbrief: {brief}\n")
    print(ledger_table(run))
    print("\nagent events:", json.dumps(run.summary()["agent"]))
    print(totals_line(run))


if __name__ == "__main__":
    main()
