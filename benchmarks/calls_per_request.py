"""Python function calls steptrace adds to one model request: a count, not a time.

On a machine shared by many jobs the timed benchmarks (``bench_llm.py``,
``bench_integrations_*.py``) move by more than the differences a change makes;
the number of Python-level calls (cProfile's count, builtins included) made on
a request's path does not, and tracks its cost. Rows, each inside one
``steptrace.run()``: ``llm_call`` on the scripted provider minus
``provider.complete``; an ``instrument``ed OpenAI client whose ``create`` is a
stub returning a prebuilt completion (the wrapper's own work), in an
unbudgeted step and in a budgeted one; LiteLLM's and LangChain's hooks
(``bench_integrations_chains.py``'s pairs) in a budgeted step, minus the bare
path. Run: ``.venv/bin/python benchmarks/calls_per_request.py``.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion

import steptrace
from bench_integrations_chains import langchain_hook_pair, litellm_hook_pair
from bench_llm import _COMPLETION, FlatPrices
from steptrace import llm
from steptrace.llm import LlmRequest, Message
from steptrace.testing import ScriptedProvider

N = 1000
BUDGET = {"max_tokens": 10**12, "max_usd": 1e6}


def calls(fn: Callable[[int], object]) -> float:
    profile = cProfile.Profile()
    with steptrace.run("count"):
        fn(10)
        profile.enable()
        fn(N)
        profile.disable()
    total: int = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return total / N


def looped(request: Callable[[], object], **step: Any) -> Callable[[int], object]:
    @steptrace.step("s", **step)
    def loop(n: int) -> None:
        for _ in range(n):
            request()

    return loop


def main() -> None:
    steptrace.configure(price_source=FlatPrices())
    provider = ScriptedProvider(lambda request: "The answer is forty-two, as computed.")
    request = LlmRequest(model="m", messages=(Message(role="user", content="What is it?"),))
    completion = ChatCompletion.model_validate(_COMPLETION)
    client = openai.OpenAI(
        api_key="sk-bench",
        base_url="http://bench.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(lambda r: httpx2.Response(200))),
    )
    client.chat.completions.create = lambda *a, **k: completion  # type: ignore[method-assign,assignment]
    llm.instrument(client)
    messages: Any = [{"role": "user", "content": "What is it?"}]

    def sdk() -> object:
        return client.chat.completions.create(model="gpt-4o-mini", messages=messages)

    lite_bare, lite = litellm_hook_pair()
    chain_bare, chain = langchain_hook_pair()
    rows = [
        (
            "llm_call (scripted) minus complete()",
            calls(looped(lambda: llm.llm_call("What is it?", provider=provider), model="m"))
            - calls(looped(lambda: provider.complete(request), model="m")),
        ),
        ("instrumented SDK wrapper, unbudgeted step", calls(looped(sdk, model="gpt-4o-mini"))),
        (
            "instrumented SDK wrapper, budgeted step",
            calls(looped(sdk, model="gpt-4o-mini", budget=BUDGET)),
        ),
        (
            "LiteLLM hook, budgeted step",
            calls(looped(lite, budget=BUDGET)) - calls(looped(lite_bare, budget=BUDGET)),
        ),
        (
            "LangChain handler, budgeted step",
            calls(looped(chain, budget=BUDGET)) - calls(looped(chain_bare, budget=BUDGET)),
        ),
    ]
    client.close()
    print(f"{'row':<44} {'calls added':>11}")
    for label, value in rows:
        print(f"{label:<44} {value:11.0f}")


if __name__ == "__main__":
    main()
