"""Issue 12, case 1: a call's price does not depend on what was imported, is
asked for once, and a call whose price is unknown says so wherever its cost
is shown (ledger row, summary, ledger table, stored run), never as $0."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import steptrace
import steptrace.llm
from steptrace import PricingUnknown
from steptrace.report import ledger_table, totals_line


def _in_fresh_process(code: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_only_the_core_imported_prices_a_known_model_under_a_usd_budget() -> None:
    result = _in_fresh_process(
        """
        import json, sys
        import steptrace

        @steptrace.step("s", budget={"max_usd": 5.0})
        def s():
            steptrace.record_llm_usage("gpt-4o-mini", 1_000_000, 0)

        s()
        (row,) = steptrace.current_run().completed_steps
        print(json.dumps({"cost": row.cost_usd, "unpriced": row.unpriced_calls}))
        """
    )
    assert result == {"cost": pytest.approx(0.15), "unpriced": 0}


def test_only_the_core_imported_records_a_known_price_without_a_budget() -> None:
    result = _in_fresh_process(
        """
        import json
        import steptrace

        steptrace.enable_tracing()
        steptrace.record_llm_usage("gpt-4o-mini", 1_000_000, 0)
        (entry,) = steptrace.peek_trace()
        print(json.dumps({"cost": entry.cost_usd, "usage": steptrace.current_run().usage()}))
        """
    )
    assert result["cost"] == pytest.approx(0.15)
    assert result["usage"][2] == pytest.approx(0.15)


def test_an_explicit_none_still_means_no_prices() -> None:
    result = _in_fresh_process(
        """
        import json
        import steptrace

        steptrace.configure(price_source=None)
        steptrace.record_llm_usage("gpt-4o-mini", 1_000_000, 0)
        usage = steptrace.current_run().usage()
        print(json.dumps({"cost": usage.cost_usd, "unpriced": usage.unpriced_calls}))
        """
    )
    assert result == {"cost": 0.0, "unpriced": 1}


class CountingPrice:
    """$1 per million tokens for ``known-*`` models; counts every question."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int]] = []

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None:
        self.asked.append((model, input_tokens, output_tokens))
        if not model.startswith("known"):
            return None
        return (input_tokens + output_tokens) / 1_000_000


def test_unknown_cost_is_counted_and_shown_never_as_zero() -> None:
    steptrace.configure(price_source=CountingPrice())

    @steptrace.step("mixed")
    def mixed() -> None:
        steptrace.record_llm_usage("known-a", 500_000, 500_000)
        steptrace.record_llm_usage("mystery", 10, 10)

    @steptrace.step("dark")
    def dark() -> None:
        steptrace.record_llm_usage("mystery", 10, 10)

    with steptrace.run("pricing") as run:
        mixed()
        dark()
    first, second = run.completed_steps
    assert (first.cost_usd, first.unpriced_calls, first.llm_calls) == (1.0, 1, 2)
    assert (second.cost_usd, second.unpriced_calls) == (0.0, 1)
    assert first.to_dict()["unpriced_calls"] == 1
    assert run.usage().unpriced_calls == 2
    assert run.summary()["unpriced_calls"] == 2
    table = ledger_table(run)
    mixed_line = next(line for line in table.splitlines() if line.startswith("mixed"))
    dark_line = next(line for line in table.splitlines() if line.startswith("dark"))
    assert "+ 1 unknown" in mixed_line
    assert "unknown" in dark_line
    assert "0.000000" not in dark_line
    assert "2 calls of unknown cost" in totals_line(run)


def test_a_usd_budget_still_refuses_an_unknown_price() -> None:
    steptrace.configure(price_source=CountingPrice())

    @steptrace.step("s", budget={"max_usd": 1.0})
    def s() -> None:
        steptrace.record_llm_usage("mystery", 10, 10)

    with pytest.raises(PricingUnknown):
        s()
    (row,) = steptrace.current_run().completed_steps
    assert row.unpriced_calls == 1


@pytest.mark.parametrize("model", ["known-model", "mystery-model"])
def test_an_llm_call_is_priced_once(model: str) -> None:
    price = CountingPrice()
    steptrace.configure(price_source=price)
    steptrace.enable_tracing()
    provider = steptrace.llm.ScriptedProvider(["hello"])
    result = steptrace.llm.llm_call("hi", model=model, provider=provider)
    assert len(price.asked) == 1
    (entry,) = steptrace.peek_trace()
    assert entry.cost_usd == result.cost_usd
    assert (entry.cost_usd is None) == model.startswith("mystery")


@pytest.mark.parametrize("model", ["known-model", "mystery-model"])
def test_an_instrumented_sdk_call_is_priced_once_and_unknown_says_so(model: str) -> None:
    from steptrace.llm.openai.instrument import instrument_openai
    from steptrace.testing._fake_openai import FakeOpenAI, OpenAIReply

    price = CountingPrice()
    steptrace.configure(price_source=price)
    with FakeOpenAI() as fake:
        fake.push(OpenAIReply(text="Hi.", prompt_tokens=500_000, completion_tokens=500_000))
        client = instrument_openai(fake.client())
        try:
            with steptrace.run("sdk") as run:
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )
        finally:
            client.close()
    assert price.asked == [(model, 500_000, 500_000)]
    usage = run.usage()
    if model.startswith("known"):
        assert (usage.cost_usd, usage.unpriced_calls) == (1.0, 0)
    else:
        assert (usage.cost_usd, usage.unpriced_calls) == (0.0, 1)
