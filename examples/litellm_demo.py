"""LiteLLM under steptrace budgets, offline: ``litellm.completion``, a stream
and a ``Router``, against steptrace's fake OpenAI server on 127.0.0.1.

``steptrace.integrations.litellm.instrument()`` wraps ``litellm.completion``
and ``acompletion``: each request is checked against the budgets in force
before LiteLLM sends it, and recorded from the usage LiteLLM reports, priced
by genai-prices under the provider LiteLLM resolves (``openai/gpt-4o-mini``
is ``openai:gpt-4o-mini``). The ``translate`` step has a token budget too
small for its third request and ``error_boundary="continue"``: that request
is never sent, the step is recorded as ``skipped``, and the run goes on.

Run it with ``python examples/litellm_demo.py`` (needs ``steptrace[litellm]``).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download

import litellm
from litellm.router import Router

import steptrace
from steptrace.integrations import litellm as steptrace_litellm
from steptrace.report import ledger_table, totals_line
from steptrace.testing import FakeOpenAI, OpenAIReply


def main() -> None:
    steptrace_litellm.instrument()
    replies = [
        OpenAIReply(text="Bonjour", prompt_tokens=120, completion_tokens=30),
        OpenAIReply(text="Merci", prompt_tokens=120, completion_tokens=30),
        OpenAIReply(text="Tides rise twice a day.", prompt_tokens=400, completion_tokens=90),
        OpenAIReply(text="A short summary.", prompt_tokens=300, completion_tokens=60),
    ]
    with FakeOpenAI(replies) as fake:
        connection = {"api_base": fake.base_url, "api_key": fake.api_key}
        router = Router(
            model_list=[
                {
                    "model_name": "cheap",
                    "litellm_params": {"model": "openai/gpt-4o-mini", **connection},
                }
            ]
        )

        @steptrace.step(budget={"max_tokens": 400}, error_boundary="continue")
        def translate(words: list[str]) -> list[str]:
            out = []
            for word in words:
                response = litellm.completion(
                    model="openai/gpt-4o-mini",
                    messages=[{"role": "user", "content": f"Translate to French: {word}"}],
                    max_tokens=100,
                    **connection,
                )
                out.append(response.choices[0].message.content)
            return out

        @steptrace.step(budget={"max_usd": 0.01})
        def explain(topic: str) -> str:
            stream = litellm.completion(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"Explain {topic}."}],
                stream=True,
                **connection,
            )
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

        @steptrace.step
        def summarize(text: str) -> str:
            response = router.completion(
                model="cheap", messages=[{"role": "user", "content": f"Summarize: {text}"}]
            )
            return str(response.choices[0].message.content)

        with steptrace.run("litellm-demo", budget={"max_usd": 0.05}) as run:
            translated = translate(["hello", "thanks", "goodbye"])
            print("translate ->", translated)
            text = explain("tides")
            print("explain   ->", text)
            print("summarize ->", summarize(text))
        sent = len(fake.requests)
    steptrace_litellm.uninstrument()
    print()
    print(ledger_table(run))
    print(totals_line(run))
    print(f"{sent} requests reached the server (the refused one never did)")


if __name__ == "__main__":
    main()
