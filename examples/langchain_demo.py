"""A LangGraph agent under steptrace budgets, offline: ``ChatOpenAI`` with
tools and ``ChatAnthropic`` against steptrace's fake OpenAI and Anthropic
servers on 127.0.0.1.

``steptrace.integrations.langchain.instrument()`` adds steptrace's callback
handler to every LangChain run: each chat model request is checked against
the budgets in force before it is sent and recorded from its
``usage_metadata``; each tool run is a ``ToolExecution`` event carrying the
model's tool-call id. The graph's nodes are steps with their own budgets: the
``review`` node's budget is too small for its request and its boundary is
``continue``, so the request is never sent, the node is ``skipped`` and the
graph finishes without a review.

Run it with ``python examples/langchain_demo.py`` (needs ``steptrace[langchain]``,
``langchain-openai``, ``langchain-anthropic`` and ``langgraph``).
"""

from __future__ import annotations

from typing import Any

from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import SecretStr

import steptrace
from steptrace.integrations import langchain as steptrace_langchain
from steptrace.report import ledger_table, totals_line
from steptrace.testing import (
    AnthropicReply,
    FakeAnthropic,
    FakeOpenAI,
    OpenAIReply,
    OpenAIToolCall,
)


@tool
def tide_table(port: str) -> str:
    """Today's high tides at a port."""
    return f"{port}: 06:12 and 18:40"


class State(MessagesState, total=False):
    review: str


def build(openai_url: str, openai_key: str, anthropic_url: str, anthropic_key: str) -> Any:
    agent_model = ChatOpenAI(
        model="gpt-4o-mini", base_url=openai_url, api_key=SecretStr(openai_key), max_retries=0
    ).bind_tools([tide_table])
    reviewer = ChatAnthropic(  # type: ignore[call-arg]
        model="claude-haiku-4-5",
        base_url=anthropic_url,
        api_key=SecretStr(anthropic_key),
        max_tokens=1_000,
        max_retries=0,
    )

    @steptrace.step(budget={"max_usd": 0.01})
    def agent(state: State) -> dict[str, Any]:
        return {"messages": [agent_model.invoke(state["messages"])]}

    @steptrace.step(budget={"max_tokens": 500}, error_boundary="continue")
    def review(state: State) -> dict[str, Any]:
        answer = state["messages"][-1].content
        return {"review": str(reviewer.invoke(f"Review this answer: {answer}").content)}

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([tide_table]))
    graph.add_node("review", review)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: "review"})
    graph.add_edge("tools", "agent")
    graph.add_edge("review", END)
    return graph.compile()


def main() -> None:
    steptrace_langchain.instrument()
    script = [
        OpenAIReply(
            tool_calls=[
                OpenAIToolCall(name="tide_table", arguments={"port": "Brest"}),
                OpenAIToolCall(name="tide_table", arguments={"port": "Cork"}),
            ],
            prompt_tokens=90,
            completion_tokens=40,
        ),
        OpenAIReply(
            text="High tide is at 06:12 in Brest and Cork.", prompt_tokens=160, completion_tokens=20
        ),
    ]
    with FakeOpenAI(script) as openai_fake, FakeAnthropic([AnthropicReply(text="Fine.")]) as anth:
        app = build(openai_fake.base_url, openai_fake.api_key, anth.url, anth.api_key)
        with steptrace.run("langchain-demo", budget={"max_usd": 0.05}) as run:
            state = app.invoke({"messages": [HumanMessage("When is high tide in Brest and Cork?")]})
        print("answer ->", state["messages"][-1].content)
        print("review ->", state.get("review", "(none: the review node ran out of budget)"))
        sent = len(openai_fake.requests) + len(anth.requests)
    steptrace_langchain.uninstrument()
    print()
    for event in run.events:
        print(" ", type(event).__name__, event.to_dict())
    print()
    print(ledger_table(run))
    print(totals_line(run))
    print(f"{sent} requests reached the servers (the refused review never did)")


if __name__ == "__main__":
    main()
