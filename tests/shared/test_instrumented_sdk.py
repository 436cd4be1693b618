"""An instrumented OpenAI SDK client (real ``openai`` package, HTTP to the fake
server on 127.0.0.1) draws from a shared budget like ``llm_call``: the
pre-flight holds the worst case while the stream runs, its end settles it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import steptrace
from steptrace import SharedBudget
from steptrace._shared import PoolTotals, SharedPool
from steptrace.testing import FakePrices

openai = pytest.importorskip("openai")

from steptrace.llm.openai.instrument import instrument_openai  # noqa: E402
from steptrace.testing._fake_openai import FakeOpenAI, OpenAIErrorReply, OpenAIReply  # noqa: E402

HELLO: list[Any] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def client() -> Iterator[Any]:
    with FakeOpenAI() as fake:
        fake.push(OpenAIReply(text="Hello from a stream.", prompt_tokens=30, completion_tokens=6))
        sdk_client = instrument_openai(fake.client())
        yield sdk_client
        sdk_client.close()


def test_a_stream_holds_its_worst_case_until_it_ends(
    client: Any, pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=10_000, pool=pool)
    with steptrace.run("r", budget=budget) as run:
        chunks = client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, max_tokens=200, stream=True
        )
        during = budget.totals()
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        after = budget.totals()
    assert text == "Hello from a stream."
    assert during.tokens == 0
    assert during.reserved_tokens > 200  # the prompt estimate plus max_tokens
    assert after == PoolTotals(36, 36 * 10**6, 0, 0)
    assert run.usage().total_tokens == 36


def test_a_failed_sdk_call_frees_its_hold_at_once(
    pool: SharedPool, key: str, flat_price: FakePrices
) -> None:
    budget = SharedBudget(key, max_tokens=10_000, pool=pool)
    with FakeOpenAI() as fake:
        fake.push(OpenAIErrorReply.bad_request("no such thing"))
        sdk_client = instrument_openai(fake.client(max_retries=0))
        try:
            with steptrace.run("r", budget=budget):
                with pytest.raises(openai.BadRequestError):
                    sdk_client.chat.completions.create(
                        model="gpt-4o-mini", messages=HELLO, max_tokens=200
                    )
                # Released when the SDK raised, not at the run's end.
                assert budget.totals() == PoolTotals(0, 0, 0, 0)
        finally:
            sdk_client.close()
