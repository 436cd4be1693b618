"""The genai-prices table as steptrace's price source: fidelity to genai-prices,
provider prefixes, unknown models, overrides, cache/reasoning/tiered/time-of-day
prices, the core's budgets priced through it, and no network or thread."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import DataSnapshot, get_snapshot, set_custom_snapshot
from genai_prices.types import ModelPrice as GenaiModelPrice
from genai_prices.types import StartDateConstraint

import steptrace
from steptrace import BudgetExhausted, PricingUnknown
from steptrace.llm import prices
from steptrace.llm.prices import ModelPrice, PriceTable, install_default_prices, price_info


def genai_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    provider_id: str | None = None,
    when: datetime | None = None,
    **details: int,
) -> float:
    """What genai-prices itself says the call costs."""
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, **details)
    result = calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=when)
    return float(result.total_price)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable()


# -- priced as genai-prices says -----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "ref", "provider_id"),
    [
        ("gpt-4o", "gpt-4o", None),
        ("openai:gpt-4o", "gpt-4o", "openai"),
        ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06", None),
        ("openai:o3", "o3", "openai"),
        ("anthropic:claude-haiku-4-5", "claude-haiku-4-5", "anthropic"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", None),
        ("google:gemini-2.5-pro", "gemini-2.5-pro", "google"),
    ],
)
@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "cache_read", "cache_write"),
    [(1000, 500, 0, 0), (12_345, 678, 4000, 0), (250_000, 3000, 100_000, 20_000), (0, 0, 0, 0)],
)
def test_known_models_cost_what_genai_prices_says(
    table: PriceTable,
    model: str,
    ref: str,
    provider_id: str | None,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
) -> None:
    expected = genai_usd(
        ref,
        input_tokens,
        output_tokens,
        provider_id=provider_id,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    got = table.cost_usd(
        model,
        input_tokens,
        output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert isinstance(got, float)


def test_gpt_4o_figure_from_the_notes(table: PriceTable) -> None:
    assert table.cost_usd("gpt-4o", 1000, 500) == pytest.approx(0.0075, rel=1e-12)


def test_every_model_in_the_table_is_priced_as_genai_prices_prices_it(table: PriceTable) -> None:
    """All of the bundled table, through the provider prefix: the same figure as
    ``calc_price``, or None exactly where the entry lacks a token price."""
    shapes = [(1000, 500, 0, 0), (300_000, 2000, 100_000, 20_000)]
    priced = unknown = 0
    for provider in get_snapshot().providers:
        for info in provider.models:
            model = f"{provider.id}:{info.id}"
            for input_tokens, output_tokens, cache_read, cache_write in shapes:
                try:
                    expected = genai_usd(
                        info.id,
                        input_tokens,
                        output_tokens,
                        provider_id=provider.id,
                        cache_read_tokens=cache_read,
                        cache_write_tokens=cache_write,
                    )
                except LookupError:
                    assert table.cost_usd(model, input_tokens, output_tokens) is None
                    continue
                got = table.cost_usd(
                    model,
                    input_tokens,
                    output_tokens,
                    cache_read_tokens=cache_read,
                    cache_write_tokens=cache_write,
                )
                if got is None:
                    # Only an entry without an input or output price is unknown.
                    info_dict = table.price_info(model)
                    assert info_dict is None or None in (
                        info_dict["input_per_mtok"],
                        info_dict["output_per_mtok"],
                    ), model
                    unknown += 1
                else:
                    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), model
                    priced += 1
    assert priced > 3000
    assert unknown < priced / 5


# -- provider prefix -----------------------------------------------------------------------


def test_provider_prefix_restricts_the_lookup_to_that_provider(table: PriceTable) -> None:
    assert table.cost_usd("openai:gpt-4o", 1000, 500) == table.cost_usd("gpt-4o", 1000, 500)
    assert table.cost_usd("OpenAI:GPT-4o", 1000, 500) == table.cost_usd("gpt-4o", 1000, 500)
    assert table.cost_usd("anthropic:gpt-4o", 1000, 500) is None
    info = table.price_info("anthropic:claude-haiku-4-5")
    assert info is not None
    assert (info["provider"], info["matched_model"]) == ("anthropic", "claude-haiku-4-5")


def test_provider_aliases_are_genai_prices_provider_matches(table: PriceTable) -> None:
    model = "bedrock:anthropic.claude-3-5-haiku-20241022-v1:0"
    info = table.price_info(model)
    assert info is not None
    assert info["provider"] == "aws"
    expected = genai_usd(
        "anthropic.claude-3-5-haiku-20241022-v1:0", 1000, 500, provider_id="bedrock"
    )
    assert table.cost_usd(model, 1000, 500) == pytest.approx(expected, rel=1e-12)


def test_text_before_a_colon_that_is_no_provider_stays_in_the_model_id(
    table: PriceTable,
) -> None:
    # A local server's model is not priced as the cloud model of the same name.
    assert table.cost_usd("ollama:gpt-4o", 1000, 500) is None
    assert table.price_info("ollama:gpt-4o") is None


# -- unknown is None, never zero -----------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "no-such-model-xyz",
        "",
        "   ",
        "ollama:llama3",
        "scripted:echo",
        "cerebras:qwen-3-coder-480b",  # in the table with no price recorded
        "google:gemma-3",  # likewise
    ],
)
def test_unknown_models_cost_none(table: PriceTable, model: str) -> None:
    assert table.cost_usd(model, 1000, 500) is None
    assert table.cost_usd(model, 0, 0) is None
    assert table.cost_usd(model, 1000, 500) is None  # the cached miss too
    assert table.price_info(model) is None


def test_input_only_entries_do_not_price_output_as_free(table: PriceTable) -> None:
    embedding = "openai:text-embedding-3-small"
    expected = genai_usd("text-embedding-3-small", 10_000, 0, provider_id="openai")
    assert expected > 0
    assert table.cost_usd(embedding, 10_000, 0) == pytest.approx(expected, rel=1e-12)
    assert table.cost_usd(embedding, 10_000, 1) is None
    info = table.price_info(embedding)
    assert info is not None
    assert info["output_per_mtok"] is None


# -- overrides and additions ---------------------------------------------------------------


def test_addition_prices_a_model_the_table_lacks() -> None:
    table = PriceTable(
        overrides={
            "my-local-model": ModelPrice(input_per_mtok=0.0, output_per_mtok=0.0),
            "Ollama:Llama3": ModelPrice(input_per_mtok=0.5, output_per_mtok=1.5),
        }
    )
    assert table.cost_usd("my-local-model", 10_000, 5_000) == 0.0
    assert table.cost_usd("vllm:my-local-model", 10_000, 5_000) == 0.0  # the id after prefix:
    assert table.cost_usd("ollama:llama3", 1_000_000, 1_000_000) == pytest.approx(2.0)
    info = table.price_info("my-local-model")
    assert info is not None
    assert info["source"] == "override"
    info = table.price_info("openai:my-local-model")
    assert info is not None
    assert (info["provider"], info["matched_model"]) == ("openai", "my-local-model")
    assert info["cache_read_per_mtok"] == 0.0


def test_override_wins_for_every_id_that_resolves_to_the_entry() -> None:
    table = PriceTable(overrides={"GPT-4o": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)})
    for model in ("gpt-4o", "openai:gpt-4o", "gpt-4o-2024-08-06", "azure_openai:gpt-4o"):
        assert table.cost_usd(model, 1_000_000, 1_000_000) == pytest.approx(3.0), model
    # Cached tokens default to the input price; other models keep the table's.
    assert table.cost_usd("gpt-4o", 1_000_000, 0, cache_read_tokens=500_000) == pytest.approx(1.0)
    assert table.cost_usd("gpt-4o-mini", 1000, 500) == pytest.approx(
        genai_usd("gpt-4o-mini", 1000, 500), rel=1e-12
    )


def test_provider_specific_override_leaves_other_providers_alone() -> None:
    table = PriceTable(overrides={"openai:gpt-4o": {"input_per_mtok": 1, "output_per_mtok": 2}})
    assert table.cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(1.0)
    azure = table.cost_usd("azure:gpt-4o", 1_000_000, 0)
    assert azure == pytest.approx(genai_usd("gpt-4o", 1_000_000, 0, provider_id="azure"))
    assert azure != pytest.approx(1.0)


def test_override_cache_prices() -> None:
    price = ModelPrice(
        input_per_mtok=3.0, output_per_mtok=15.0, cache_read_per_mtok=0.3, cache_write_per_mtok=3.75
    )
    table = PriceTable(overrides={"m": price})
    cost = table.cost_usd("m", 1_000_000, 0, cache_read_tokens=200_000, cache_write_tokens=100_000)
    assert cost == pytest.approx((700_000 * 3.0 + 200_000 * 0.3 + 100_000 * 3.75) / 1e6)


@pytest.mark.parametrize(
    ("price", "error", "words"),
    [
        ({"input_per_mtok": -1, "output_per_mtok": 1}, ValueError, ["'m'", "input_per_mtok"]),
        ({"input_per_mtok": 1, "output_per_mtok": float("nan")}, ValueError, ["output_per_mtok"]),
        ({"input_per_mtok": 1, "output_per_mtok": True}, TypeError, ["'m'", "output_per_mtok"]),
        ({"input_per_mtok": "1", "output_per_mtok": 1}, TypeError, ["'m'", "input_per_mtok"]),
        ({"input_per_mtok": 1}, ValueError, ["'m'", "output_per_mtok is required"]),
        (
            {"input_per_mtok": 1, "output_per_mtok": 1, "cache_read_per_mtok": -0.1},
            ValueError,
            ["'m'", "cache_read_per_mtok"],
        ),
        ({"input_per_mtok": 1, "output_per_mtok": 1, "cached": 1}, ValueError, ["'m'", "cached"]),
        (3.0, TypeError, ["'m'", "ModelPrice"]),
    ],
)
def test_bad_overrides_name_the_model_and_field(
    price: Any, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        PriceTable(overrides={"m": price})
    for word in words:
        assert word in str(info.value)


def test_model_price_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="cache_write_per_mtok"):
        ModelPrice(1.0, 1.0, cache_write_per_mtok=float("inf"))
    with pytest.raises(TypeError, match="input_per_mtok"):
        ModelPrice(None, 1.0)  # type: ignore[arg-type]
    assert ModelPrice(1, 2).input_per_mtok == 1.0
    assert isinstance(ModelPrice(1, 2).input_per_mtok, float)
    # A Decimal from a config loader is accepted at run time and stored as float.
    assert ModelPrice(Decimal("0.15"), 1).input_per_mtok == 0.15  # type: ignore[arg-type]


def test_override_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="overridden twice"):
        PriceTable(overrides={"gpt-4o": ModelPrice(1, 1), "GPT-4O": ModelPrice(2, 2)})
    with pytest.raises(TypeError, match="non-empty model ids"):
        PriceTable(overrides={"": ModelPrice(1, 1)})
    with pytest.raises(TypeError, match="dict of model id"):
        PriceTable(overrides=[("m", ModelPrice(1, 1))])  # type: ignore[arg-type]


# -- cache, reasoning, tiered and time-of-day prices ---------------------------------------


def test_cache_reads_cost_less_than_plain_input_and_writes_more(table: PriceTable) -> None:
    model = "anthropic:claude-haiku-4-5"
    plain = table.cost_usd(model, 10_000, 0)
    read = table.cost_usd(model, 10_000, 0, cache_read_tokens=8_000)
    written = table.cost_usd(model, 10_000, 0, cache_write_tokens=8_000)
    assert plain is not None
    assert read is not None
    assert written is not None
    assert read < plain < written
    info = table.price_info(model)
    assert info is not None
    assert info["cache_read_per_mtok"] < info["input_per_mtok"]
    assert read == pytest.approx(
        (2_000 * info["input_per_mtok"] + 8_000 * info["cache_read_per_mtok"]) / 1e6
    )


def test_reasoning_tokens_at_their_own_price(table: PriceTable) -> None:
    model = "perplexity:sonar-deep-research"
    expected = genai_usd(
        "sonar-deep-research", 1000, 5000, provider_id="perplexity", output_reasoning_tokens=4000
    )
    got = table.cost_usd(model, 1000, 5000, reasoning_tokens=4000)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got != pytest.approx(table.cost_usd(model, 1000, 5000))
    # Where reasoning has no price of its own, it is output.
    assert table.cost_usd("gpt-4o", 10, 50, reasoning_tokens=40) == table.cost_usd("gpt-4o", 10, 50)


def test_tiered_price_switches_over_the_threshold(table: PriceTable) -> None:
    info = table.price_info("google:gemini-2.5-pro")
    assert info is not None
    (tier,) = info["tiers"]
    threshold = tier["above_input_tokens"]
    assert tier["input_per_mtok"] > info["input_per_mtok"]
    for input_tokens in (threshold, threshold + 1):
        expected = genai_usd("gemini-2.5-pro", input_tokens, 100, provider_id="google")
        got = table.cost_usd("google:gemini-2.5-pro", input_tokens, 100)
        assert got == pytest.approx(expected, rel=1e-12)
    below = table.cost_usd("google:gemini-2.5-pro", threshold, 0)
    above = table.cost_usd("google:gemini-2.5-pro", threshold + 1, 0)
    assert below is not None
    assert above is not None
    assert above / (threshold + 1) > below / threshold * 1.5


@pytest.mark.parametrize("hour", [3, 17])
def test_time_of_day_prices_follow_the_clock(
    monkeypatch: pytest.MonkeyPatch, table: PriceTable, hour: int
) -> None:
    when = datetime(2025, 6, 1, hour, 0, tzinfo=UTC)
    monkeypatch.setattr(prices, "_now", lambda: when)
    expected = genai_usd("deepseek-chat", 10_000, 2_000, provider_id="deepseek", when=when)
    assert table.cost_usd("deepseek:deepseek-chat", 10_000, 2_000) == pytest.approx(
        expected, rel=1e-12
    )
    info = table.price_info("deepseek:deepseek-chat")
    assert info is not None
    assert info["time_dependent"] is True


def test_off_peak_and_peak_differ(monkeypatch: pytest.MonkeyPatch, table: PriceTable) -> None:
    costs = set()
    for hour in (3, 17):
        when = datetime(2025, 6, 1, hour, 0, tzinfo=UTC)
        monkeypatch.setattr(prices, "_now", lambda when=when: when)
        costs.add(table.cost_usd("deepseek-chat", 10_000, 2_000))
    assert len(costs) == 2


def test_a_new_genai_prices_snapshot_is_picked_up(table: PriceTable) -> None:
    """What ``UpdatePrices`` does when a user starts it: the table follows."""
    before = table.cost_usd("gpt-4o", 1_000_000, 0)
    bundled = get_snapshot()
    openai = next(p for p in bundled.providers if p.id == "openai")
    gpt_4o = next(m for m in openai.models if m.id == "gpt-4o")
    changed = type(gpt_4o)(
        id=gpt_4o.id,
        match=gpt_4o.match,
        prices=GenaiModelPrice(input_mtok=Decimal("7"), output_mtok=Decimal("9")),
    )
    new_openai = type(openai)(
        id=openai.id,
        name=openai.name,
        api_pattern=openai.api_pattern,
        model_match=openai.model_match,
        models=[changed],
    )
    set_custom_snapshot(DataSnapshot(providers=[new_openai], from_auto_update=True))
    try:
        assert table.cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(7.0)
    finally:
        set_custom_snapshot(None)
    assert table.cost_usd("gpt-4o", 1_000_000, 0) == before


def test_dated_prices_that_all_started_are_resolved_once(table: PriceTable) -> None:
    dated = [
        (p.id, m.id)
        for p in get_snapshot().providers
        for m in p.models
        if isinstance(m.prices, list)
        and all(isinstance(c.constraint, StartDateConstraint | None) for c in m.prices)
        and m.prices[-1].prices.input_mtok is not None
        and m.prices[-1].prices.output_mtok is not None
    ]
    assert dated
    provider, model = dated[0]
    info = table.price_info(f"{provider}:{model}")
    assert info is not None
    assert info["time_dependent"] is False


# -- bad counts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "words"),
    [
        ((100, 0, 80, 30), "cannot exceed input_tokens (100)"),
        ((-1, 0, 0, 0), "input_tokens must be >= 0"),
        ((10, 0, -5, 0), "cache_read_tokens must be >= 0"),
        ((10, -1, 0, 0), "output_tokens must be >= 0"),
    ],
)
def test_inconsistent_counts_are_errors(
    table: PriceTable, counts: tuple[int, int, int, int], words: str
) -> None:
    i, o, r, w = counts
    with pytest.raises(ValueError, match="'gpt-4o'") as info:
        table.cost_usd("gpt-4o", i, o, cache_read_tokens=r, cache_write_tokens=w)
    assert words in str(info.value)
    with pytest.raises(ValueError, match="reasoning_tokens"):
        table.cost_usd("gpt-4o", 10, 5, reasoning_tokens=6)


# -- with the core -------------------------------------------------------------------------


def test_is_a_price_source(table: PriceTable) -> None:
    assert isinstance(table, steptrace.PriceSource)


def test_record_llm_usage_is_priced_and_exhausts_the_budget_at_the_right_call() -> None:
    steptrace.configure(price_source=PriceTable())
    per_call = genai_usd("gpt-4o", 1000, 500)  # $0.0075
    calls: list[int] = []

    @steptrace.step("s", model="openai:gpt-4o", budget={"max_usd": 0.02})
    def s() -> None:
        for n in range(1, 10):
            calls.append(n)
            steptrace.record_llm_usage("", 1000, 500)  # the step's model, cost from the table

    with pytest.raises(BudgetExhausted) as info:
        s()
    assert calls == [1, 2, 3]  # 0.0075, 0.015, 0.0225 > 0.02
    assert info.value.limit == "max_usd"
    assert info.value.consumed_cost_usd == pytest.approx(3 * per_call)
    (record,) = steptrace.current_run().completed_steps
    assert record.cost_usd == pytest.approx(3 * per_call)


def test_recorded_cache_reads_are_priced_as_cache_reads() -> None:
    steptrace.configure(price_source=PriceTable())
    steptrace.enable_tracing()
    with steptrace.run("r"):
        steptrace.record_llm_usage("anthropic:claude-haiku-4-5", 10_000, 100, cache_tokens=9_000)
        (entry,) = steptrace.peek_trace()
    expected = genai_usd(
        "claude-haiku-4-5", 10_000, 100, provider_id="anthropic", cache_read_tokens=9_000
    )
    assert entry.cost_usd == pytest.approx(expected, rel=1e-12)


def test_unknown_model_under_a_usd_budget_is_pricing_unknown() -> None:
    steptrace.configure(price_source=PriceTable())

    @steptrace.step("s", budget={"max_usd": 1.0})
    def s() -> int:
        with pytest.raises(PricingUnknown) as info:
            steptrace.record_llm_usage("ollama:llama3", 7, 3)
        assert info.value.model == "ollama:llama3"
        active = steptrace.current_step()
        assert active is not None
        return active.llm_calls

    assert s() == 1


def test_preflight_check_budget_prices_through_the_table() -> None:
    steptrace.configure(price_source=PriceTable())

    @steptrace.step("s", budget={"max_usd": 0.02})
    def s() -> BudgetExhausted:
        steptrace.record_llm_usage("gpt-4o", 1000, 500)
        steptrace.record_llm_usage("gpt-4o", 1000, 500)  # $0.015 used
        steptrace.check_budget("gpt-4o", 1000, 0)  # + 0.0025 fits
        with pytest.raises(PricingUnknown):
            steptrace.check_budget("no-such-model-xyz", 1, 1)
        with pytest.raises(BudgetExhausted) as info:
            steptrace.check_budget("gpt-4o", 1000, 500)  # + 0.0075 does not
        return info.value

    err = s()
    assert err.preflight is True
    assert err.projected == pytest.approx(0.0075)


def test_install_default_prices() -> None:
    installed = install_default_prices()
    assert isinstance(installed, PriceTable)
    steptrace.enable_tracing()
    steptrace.record_llm_usage("gpt-4o", 1000, 500)
    (entry,) = steptrace.take_trace()
    assert entry.cost_usd == pytest.approx(0.0075)
    # An already configured source is kept unless replace=True.
    assert install_default_prices() is None
    mine = PriceTable(overrides={"m": ModelPrice(1, 1)})
    steptrace.configure(price_source=mine)
    assert install_default_prices() is None
    assert price_info("m") is not None  # the configured table's override
    replaced = install_default_prices(replace=True, overrides={"x": ModelPrice(2, 2)})
    assert replaced is not None
    assert replaced is not mine
    assert price_info("m") is None
    assert price_info("x") is not None


def test_without_genai_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)
    with pytest.raises(ImportError, match=r"pip install 'steptrace\[prices\]'"):
        PriceTable()
    assert install_default_prices() is None


def test_price_info_is_json_ready() -> None:
    info = price_info("gpt-4o")
    assert info is not None
    assert json.loads(json.dumps(info)) == info
    assert info["genai_prices_version"] == genai_prices.__version__
    assert price_info("no-such-model-xyz") is None
    with pytest.raises(TypeError):
        price_info(3)  # type: ignore[arg-type]


# -- fast, bounded, thread-safe; no network, no thread -------------------------------------


def test_lookups_are_cached_and_the_cache_is_bounded(table: PriceTable) -> None:
    for n in range(prices._MAX_CACHED_MODELS + 50):
        assert table.cost_usd(f"nope-{n}", 1, 1) is None
    assert len(table._cache) <= prices._MAX_CACHED_MODELS
    assert table.cost_usd("gpt-4o", 1000, 500) == pytest.approx(0.0075)


def test_concurrent_pricing_agrees(table: PriceTable) -> None:
    models = ["gpt-4o", "claude-haiku-4-5", "openai:o3", "deepseek-chat", "nope"]
    expected = {m: PriceTable().cost_usd(m, 1234, 567) for m in models}
    results: list[bool] = []

    def work() -> None:
        results.append(all(table.cost_usd(m, 1234, 567) == expected[m] for m in models * 50))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_pricing_needs_no_network(no_network: list[object]) -> None:
    table = PriceTable(overrides={"mine": ModelPrice(1, 1)})
    models = ["gpt-4o", "anthropic:claude-haiku-4-5", "gemini-2.5-pro", "deepseek-chat", "mine"]
    for model in models:
        assert table.cost_usd(model, 1000, 500) is not None
        assert table.price_info(model) is not None
    assert table.cost_usd("nope", 1, 1) is None
    assert no_network == []


def test_no_updater_thread_is_started() -> None:
    before = {t.ident for t in threading.enumerate()}
    table = PriceTable()
    install_default_prices(replace=True)
    for model in ("gpt-4o", "claude-haiku-4-5", "deepseek-chat", "nope"):
        table.cost_usd(model, 10, 10)
        price_info(model)
    # A thread of an earlier test may end meanwhile (teardowns do not wait for
    # every background thread): what must hold is that none was started.
    assert {t.ident for t in threading.enumerate()} <= before
    assert genai_prices.update_prices._shared_updater.thread is None


PROBE = textwrap.dedent(
    """
    import json, sys, threading

    events = []
    sys.addaudithook(
        lambda event, args: events.append(event) if event.startswith("socket.") else None
    )

    import steptrace.llm.prices as prices

    lazy = "genai_prices" not in sys.modules
    prices.install_default_prices()
    lazy_after_install = "genai_prices" not in sys.modules
    import steptrace
    steptrace.record_llm_usage("gpt-4o", 1000, 500)
    cost = prices.PriceTable().cost_usd("anthropic:claude-haiku-4-5", 1000, 500)
    print(json.dumps({
        "lazy": lazy,
        "lazy_after_install": lazy_after_install,
        "loaded": "genai_prices" in sys.modules,
        "cost": cost,
        "socket_events": sorted(set(events)),
        "threads": sorted(t.name for t in threading.enumerate()),
    }))
    """
)


def test_fresh_process_imports_lazily_and_uses_no_socket_or_thread() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout)
    assert result["lazy"] is True
    assert result["lazy_after_install"] is True
    assert result["loaded"] is True
    assert result["cost"] == pytest.approx(0.0035)
    assert result["socket_events"] == []
    assert result["threads"] == ["MainThread"]


def test_known_models_lists_overrides_and_the_bundled_data() -> None:
    table = PriceTable(overrides={"my-model": ModelPrice(input_per_mtok=1, output_per_mtok=2)})
    known = table.known_models()
    assert "my-model" in known
    assert "gpt-4o" in known
    assert known == sorted(set(known))
    assert all(table.price_info(name) is not None for name in ("my-model", "gpt-4o"))
