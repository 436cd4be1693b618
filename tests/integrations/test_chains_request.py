"""``ModelRequest`` (the LiteLLM and LangChain integrations' request) shows
its ``LlmCall`` to the event collectors of the context that made the request,
wherever the response arrives, and to no others, whether or not a collector
existed in the process when the request started (the request copies its
context only once one has)."""

from __future__ import annotations

import contextvars

import pytest

import steptrace
from steptrace import LlmCall, tracing
from steptrace.integrations._chains_request import ModelRequest, TokenCounts
from steptrace.llm.prices import ModelPrice, PriceTable

PRICES = PriceTable(overrides={"m": ModelPrice(1.0, 2.0)})


def _start() -> ModelRequest:
    return ModelRequest.start(
        "m", system="test", estimated_input_tokens=10, max_output_tokens=20, price=PRICES
    )


def test_the_requesting_context_collects_the_event_where_ever_it_finishes() -> None:
    with steptrace.run("collect") as run:
        with tracing.collect_events() as collected:
            request = _start()
        # Finished outside the block, from another context: still the block's.
        contextvars.Context().run(request.finish, TokenCounts(3, 4), response_id="r1")
        (event,) = collected
        assert isinstance(event, LlmCall)
        assert event.call_id == "r1"
        assert [e.call_id for e in run.events if isinstance(e, LlmCall)] == ["r1"]


@pytest.mark.parametrize("collector_existed", [False, True])
def test_a_collector_of_another_context_does_not_see_the_event(
    collector_existed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a process where no collect_events block has run yet, or has.
    monkeypatch.setattr(tracing, "_collecting", collector_existed)
    with steptrace.run("collect") as run:
        request = _start()
        with tracing.collect_events() as collected:
            request.finish(TokenCounts(3, 4), response_id="r2")
        assert collected == []
        (event,) = [e for e in run.events if isinstance(e, LlmCall)]
        assert (event.input_tokens, event.output_tokens) == (3, 4)
        assert run.usage().llm_calls == 1
