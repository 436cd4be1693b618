"""What the LiteLLM and LangChain integrations add to one model request,
against the same framework uninstrumented, in one run.

Two measurements per framework, microseconds per request, inside a budgeted
step of a run:

- "added at the hook" (the figure held to the target): exactly the path the
  framework takes through steptrace for one request, driven with the
  framework's own objects, against the same path without steptrace. LiteLLM:
  the ``instrument()`` wrapper around a ``completion`` that returns a real
  ``ModelResponse`` at once, vs calling that function bare. LangChain: a
  ``CallbackManager`` with the ``StepTraceCallbackHandler`` dispatching
  ``on_chat_model_start`` and ``on_llm_end`` (with a real ``LLMResult``) vs
  the same manager without it, so LangChain's dispatch to one more handler
  counts too. Pre-flight hold, span, ``LlmCall``, pricing and settling are all
  in it.
- "end to end": the framework calling the official OpenAI SDK over an
  in-process ``httpx2.MockTransport`` (no socket), bare vs instrumented,
  fastest of alternating repeats. The frameworks' own work is milliseconds a
  request and varies by more than the overhead on a shared machine, so this
  row shows scale, not the overhead.

Target: at most 30 microseconds added per request. On a busy shared machine
every figure stretches alike, so the run also measures what ``llm_call``
adds to the scripted provider (the LLM layer's own 25 microsecond target,
about 18 on a quiet machine) and prints each hook row as a ratio of it.
Run: ``.venv/bin/python benchmarks/bench_integrations_chains.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx2
import openai

import steptrace
from _machine import load_average, revision
from steptrace.llm.prices import PriceTable

TARGET_US = 30.0
MESSAGES = [{"role": "user", "content": "What is it?"}]
_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The answer is forty-two."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}


def answer(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json=_COMPLETION)


def sdk_client() -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-bench",
        base_url="http://bench.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )


def per_request_us(request: Callable[[], object], calls: int) -> float:
    """Microseconds per request over ``calls`` requests in a budgeted step of a
    fresh run, the cyclic collector off while timing (as ``timeit`` does)."""

    @steptrace.step(budget={"max_usd": 1_000.0})
    def loop() -> None:
        for _ in range(calls):
            request()

    with steptrace.run("bench"):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            loop()
            return (time.perf_counter() - started) / calls * 1e6
        finally:
            gc.enable()


def compare(
    request: Callable[[], object],
    instrument: Callable[[], object],
    uninstrument: Callable[[], object],
    calls: int,
    repeats: int,
) -> tuple[float, float]:
    """(bare, instrumented) microseconds per request, fastest repeat of each."""
    request()  # warm caches (model resolution, price lookup, SDK imports)
    bare, instrumented = [], []
    for _ in range(repeats):
        bare.append(per_request_us(request, calls))
        instrument()
        instrumented.append(per_request_us(request, calls))
        uninstrument()
    return min(bare), min(instrumented)


def litellm_rows(calls: int, repeats: int) -> tuple[float, float]:
    import litellm

    from steptrace.integrations import litellm as st_litellm

    client = sdk_client()

    def request() -> Any:
        return litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES, client=client)

    st_litellm.instrument()
    request()  # the instrumented path warmed too
    st_litellm.uninstrument()
    return compare(request, st_litellm.instrument, st_litellm.uninstrument, calls, repeats)


def langchain_rows(calls: int, repeats: int) -> tuple[float, float]:
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from steptrace.integrations import langchain as st_langchain

    model = ChatOpenAI(
        model="gpt-4o-mini",
        api_key=SecretStr("sk-bench"),
        base_url="http://bench.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )

    def request() -> Any:
        return model.invoke("What is it?")

    st_langchain.instrument()
    request()
    st_langchain.uninstrument()
    return compare(request, st_langchain.instrument, st_langchain.uninstrument, calls, repeats)


Pair = tuple[Callable[[], object], Callable[[], object]]


def interleaved(pairs: list[Pair], calls: int, repeats: int) -> list[tuple[float, float]]:
    """(bare, hooked) microseconds per request for each pair, fastest repeat of
    each; every repeat measures every callable in turn, so load that comes and
    goes on a shared machine touches all rows alike."""
    for bare, hooked in pairs:
        bare()
        hooked()
    samples: list[list[float]] = [[] for _ in range(2 * len(pairs))]
    for _ in range(repeats):
        for index, function in enumerate(f for pair in pairs for f in pair):
            samples[index].append(per_request_us(function, calls))
    fastest = [min(each) for each in samples]
    return [(fastest[2 * i], fastest[2 * i + 1]) for i in range(len(pairs))]


def litellm_hook_pair() -> Pair:
    import litellm

    from steptrace.integrations import litellm as st_litellm

    response = litellm.completion(
        model="openai/gpt-4o-mini", messages=MESSAGES, client=sdk_client()
    )

    def completion(**kwargs: Any) -> Any:
        return response

    # instrument() wraps whatever litellm.completion is: here a function that
    # answers at once, so only steptrace's work differs between the rows.
    real = litellm.completion
    litellm.completion = completion
    try:
        st_litellm.instrument()
        instrumented = litellm.completion
        st_litellm.uninstrument()
    finally:
        litellm.completion = real
    return (
        lambda: completion(model="openai/gpt-4o-mini", messages=MESSAGES),
        lambda: instrumented(model="openai/gpt-4o-mini", messages=MESSAGES),
    )


def langchain_hook_pair() -> Pair:
    import uuid

    from langchain_core.callbacks import CallbackManager
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    from steptrace.integrations.langchain import StepTraceCallbackHandler

    messages: list[list[BaseMessage]] = [[HumanMessage("What is it?")]]
    message = AIMessage(
        "The answer is forty-two.",
        response_metadata={"id": "chatcmpl-bench", "model_name": "gpt-4o-mini"},
        usage_metadata={"input_tokens": 12, "output_tokens": 7, "total_tokens": 19},
    )
    result = LLMResult(generations=[[ChatGeneration(message=message)]])
    metadata = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini", "ls_model_type": "chat"}
    params = {"model": "gpt-4o-mini", "_type": "openai-chat", "max_tokens": 200}
    serialized = {"id": ["langchain", "chat_models", "openai", "ChatOpenAI"]}

    def request(manager: CallbackManager) -> None:
        (run,) = manager.on_chat_model_start(
            serialized, messages, run_id=uuid.uuid4(), invocation_params=params
        )
        run.on_llm_end(result)

    bare = CallbackManager(handlers=[], inheritable_metadata=metadata)
    hooked = CallbackManager(handlers=[StepTraceCallbackHandler()], inheritable_metadata=metadata)
    hooked.metadata.update(metadata)
    bare.metadata.update(metadata)
    return (lambda: request(bare), lambda: request(hooked))


def llm_call_pair() -> Pair:
    """The baseline: ``llm_call`` on the scripted provider vs the bare provider."""
    from steptrace import llm
    from steptrace.llm import LlmRequest, Message
    from steptrace.testing import ScriptedProvider

    provider = ScriptedProvider(lambda request: "The answer is forty-two.")
    request = LlmRequest(model="gpt-4o-mini", messages=(Message(role="user", content="Hi?"),))
    return (
        lambda: provider.complete(request),
        lambda: llm.llm_call("Hi?", model="gpt-4o-mini", provider=provider),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    args = parser.parse_args()
    calls, repeats = (30, 3) if args.quick else (300, 9)
    hook_calls = 500 if args.quick else 5_000
    steptrace.configure(price_source=PriceTable())
    print(
        f"steptrace framework integrations, per model request; {repeats} repeats of {calls} "
        f"requests, fastest repeat; revision {revision()}, load {load_average()}"
    )
    print(f"{'row':<44} {'us/request':>11} {'added':>9}  target {TARGET_US:g} us")
    (bare, traced), *hooks = interleaved(
        [llm_call_pair(), litellm_hook_pair(), langchain_hook_pair()], hook_calls, repeats
    )
    baseline = traced - bare
    print(f"{'baseline: llm_call on the scripted provider':<44} {traced:11.1f} {baseline:9.1f}")
    for name, (bare, instrumented) in zip(("LiteLLM", "LangChain"), hooks, strict=True):
        added = instrumented - bare
        print(f"{name + ' at the hook, bare':<44} {bare:11.1f}")
        verdict = f"{'PASS' if added <= TARGET_US else 'FAIL'} ({added / baseline:.2f}x llm_call)"
        print(
            f"{name + ' at the hook, instrumented':<44} {instrumented:11.1f} {added:9.1f}  "
            f"{verdict}"
        )
    for name, rows in (("LiteLLM", litellm_rows), ("LangChain ChatOpenAI", langchain_rows)):
        bare, instrumented = rows(calls, repeats)
        added = instrumented - bare
        print(f"{name + ' end to end, bare':<44} {bare:11.1f}")
        print(
            f"{name + ' end to end, instrumented':<44} {instrumented:11.1f} {added:9.1f}  (scale)"
        )


if __name__ == "__main__":
    main()
