"""A small budgeted pipeline for the CLI tests, on the scripted provider.

An ``analyst`` persona (capped at $0.01) runs two steps: ``fetch`` (a budget
of 1,000 tokens) and ``summarize`` (no budget), each making one ``llm_call``
whose usage is fixed by the script: fetch 100 tokens in and 20 out,
summarize 200 in and 40 out. ``test-model`` is priced at $1 (input) and $2
(output) per million tokens, so the run costs exactly $0.00042.

Options (argv, so ``steptrace run`` passes them through):
``--exit N`` ends with ``SystemExit(N)`` after the steps; ``--raise`` raises
``ValueError("boom")`` in a third step; ``--wait`` reads one line from stdin
inside ``fetch`` after its call (the live display test waits on it). The
answers end with ``$PIPELINE_SALT``, so a replay (which must answer with the
recorded text) is told apart from the scripted provider answering again.
"""

from __future__ import annotations

import os
import sys

import steptrace
from steptrace import llm
from steptrace.llm import LlmRequest, LlmResponse, ModelPrice

MODEL = "test-model"
USAGE = {"fetch": (100, 20), "summarize": (200, 40)}


def answer(request: LlmRequest) -> LlmResponse:
    step = steptrace.current_step()
    name = "none" if step is None else step.name
    input_tokens, output_tokens = USAGE.get(name, (1, 1))
    salt = os.environ.get("PIPELINE_SALT", "")
    return LlmResponse(
        text=f"{name} says: {request.messages[-1].content[::-1]}{salt}",
        model=request.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


@steptrace.step(model=MODEL, budget={"max_tokens": 1000})
def fetch(topic: str) -> str:
    text = llm.llm_call(f"fetch notes on {topic}", max_tokens=100).text
    if "--wait" in sys.argv:
        sys.stdin.readline()
    return text


@steptrace.step(model=MODEL)
def summarize(notes: str) -> str:
    return llm.llm_call(f"summarize: {notes}", max_tokens=100).text


@steptrace.step
def explode() -> None:
    raise ValueError("boom")


@steptrace.persona("analyst", budget={"max_usd": 0.01})
def analyst(topic: str) -> str:
    return summarize(fetch(topic))


def main(argv: list[str]) -> int:
    llm.install_default_prices(overrides={MODEL: ModelPrice(1.0, 2.0)}, replace=True)
    llm.configure(provider=llm.ScriptedProvider(answer))
    print(analyst("batteries"))
    if "--raise" in argv:
        explode()
    if "--exit" in argv:
        return int(argv[argv.index("--exit") + 1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
