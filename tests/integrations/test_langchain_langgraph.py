"""LangGraph nodes as budgeted steps, with real LangGraph and ChatOpenAI talking
to the fake OpenAI server: each node's budget holds (a refused request never
arrives), its boundary decides what the graph does, usage lands in the node's
ledger row, sync and async graphs alike; and the record survives LangSmith
tracing switched on (pointed at a loopback server)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers.context import tracing_v2_enabled
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langsmith import Client

import steptrace
from steptrace import BudgetExhausted, LlmCall
from steptrace.integrations import langchain as st_langchain
from steptrace.llm.prices import ModelPrice, PriceTable
from steptrace.testing import FakeOpenAI, FakeServer, HttpReply, OpenAIReply


class State(TypedDict, total=False):
    topic: str
    outline: str
    draft: str


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    steptrace.configure(price_source=PriceTable(overrides={"gpt-4o-mini": ModelPrice(1.0, 2.0)}))
    st_langchain.instrument()
    yield
    st_langchain.uninstrument()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def build(fake: FakeOpenAI, boundary: str, *, draft_budget: int) -> CompiledStateGraph[Any]:
    """outline -> draft -> END; each node a step with its own token budget."""
    model = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=fake.base_url,
        api_key=fake.api_key,  # type: ignore[arg-type]
        max_retries=0,
        max_tokens=100,  # type: ignore[call-arg]
    )

    @steptrace.step(budget={"max_tokens": 1_000})
    async def outline(state: State) -> State:
        reply = await model.ainvoke(f"Outline {state['topic']}.")
        return {"outline": str(reply.content)}

    @steptrace.step(budget={"max_tokens": draft_budget}, error_boundary=boundary)
    async def draft(state: State) -> State:
        reply = await model.ainvoke(f"Draft from {state['outline']}.")
        return {"draft": str(reply.content)}

    graph = StateGraph(State)
    graph.add_node("outline", outline)
    graph.add_node("draft", draft)
    graph.add_edge(START, "outline")
    graph.add_edge("outline", "draft")
    graph.add_edge("draft", END)
    return graph.compile()


def sync_nodes_graph(fake: FakeOpenAI, draft_budget: int) -> CompiledStateGraph[Any]:
    model = ChatOpenAI(
        model="gpt-4o-mini",
        base_url=fake.base_url,
        api_key=fake.api_key,  # type: ignore[arg-type]
        max_retries=0,
        max_tokens=100,  # type: ignore[call-arg]
    )

    @steptrace.step(budget={"max_tokens": 1_000})
    def outline(state: State) -> State:
        return {"outline": str(model.invoke(f"Outline {state['topic']}.").content)}

    @steptrace.step(budget={"max_tokens": draft_budget}, error_boundary="continue")
    def draft(state: State) -> State:
        return {"draft": str(model.invoke(f"Draft from {state['outline']}.").content)}

    graph = StateGraph(State)
    graph.add_node("outline", outline)
    graph.add_node("draft", draft)
    graph.add_edge(START, "outline")
    graph.add_edge("outline", "draft")
    graph.add_edge("draft", END)
    return graph.compile()


def statuses(run: steptrace.Run) -> list[tuple[str, str, int]]:
    return [(r.name, r.status, r.input_tokens + r.output_tokens) for r in run.completed_steps]


@pytest.mark.parametrize("boundary", ["continue", "escalate", "fail"])
def test_a_node_out_of_budget_follows_its_boundary(fake: FakeOpenAI, boundary: str) -> None:
    fake.push(OpenAIReply(text="1. intro 2. body", prompt_tokens=30, completion_tokens=10))
    app = build(fake, boundary, draft_budget=50)  # the draft's worst case is 100 + prompt

    async def go() -> Any:
        return await app.ainvoke({"topic": "tides"})

    with steptrace.run("graph") as run:
        if boundary == "continue":
            state = asyncio.run(go())
            assert state == {"topic": "tides", "outline": "1. intro 2. body"}  # no draft
        else:
            with pytest.raises(BudgetExhausted) as info:
                asyncio.run(go())
            assert info.value.step == "draft"
            assert info.value.escalated is (boundary == "escalate")
    status = {"continue": "skipped", "escalate": "escalated", "fail": "failed"}[boundary]
    assert statuses(run) == [("outline", "completed", 40), ("draft", status, 0)]
    assert len(fake.requests) == 1


def test_sync_graph_nodes_are_steps_whose_usage_is_their_own(fake: FakeOpenAI) -> None:
    fake.push(
        OpenAIReply(text="outline", prompt_tokens=30, completion_tokens=10),
        OpenAIReply(text="draft", prompt_tokens=60, completion_tokens=40),
    )
    app = sync_nodes_graph(fake, draft_budget=1_000)
    with steptrace.run("graph", budget={"max_usd": 1.0}) as run:
        state = app.invoke({"topic": "tides"})
    assert state["draft"] == "draft"
    assert statuses(run) == [("outline", "completed", 40), ("draft", "completed", 100)]
    assert [e.input_tokens for e in run.events if isinstance(e, LlmCall)] == [30, 60]
    assert run.summary()["cost_usd"] == pytest.approx((90 * 1.0 + 50 * 2.0) / 1e6, rel=1e-12)


def test_the_record_holds_with_langsmith_tracing_on(fake: FakeOpenAI) -> None:
    fake.push(OpenAIReply(text="outline", prompt_tokens=30, completion_tokens=10))
    app = sync_nodes_graph(fake, draft_budget=50)
    with FakeServer() as tracing_server:
        # LangSmith's client posts runs to this loopback server (any path: 404s).
        tracing_server.route("GET", "/info", lambda request: HttpReply(body={"version": "0.0"}))
        client = Client(api_url=tracing_server.url, api_key="lsv2-test-not-a-key")
        config: RunnableConfig = {}
        with steptrace.run("graph") as run, tracing_v2_enabled(client=client):
            context = contextvars.copy_context()
            state = context.run(app.invoke, {"topic": "tides"}, config)
        client.flush()
    assert state == {"topic": "tides", "outline": "outline"}
    assert statuses(run) == [("outline", "completed", 40), ("draft", "skipped", 0)]
    assert len(fake.requests) == 1
    assert any(r.method == "POST" for r in tracing_server.requests)  # tracing really was on
