"""An agent scripted offline: tool-call replies, then a schema answer built by the provider."""

from dataclasses import dataclass

import steptrace
from steptrace.agent import agent_loop, tool
from steptrace.llm import ToolCall
from steptrace.testing import Reply, ScriptedProvider


@tool(classification="read_only")
def population(city: str) -> int:
    """The number of people living in a city."""
    return {"Paris": 2_102_650, "Lyon": 522_250}[city]


@dataclass
class Answer:
    city: str
    population: int


provider = ScriptedProvider(
    [
        # Turn 1: the model asks for two tool calls; their results go back to it.
        Reply(
            tool_calls=[
                ToolCall(id="c1", name="population", arguments={"city": "Paris"}),
                ToolCall(id="c2", name="population", arguments={"city": "Lyon"}),
            ]
        ),
        # Turn 2: a scripted final answer, as JSON for the output schema.
        Reply.json({"city": "Paris", "population": 2_102_650}),
    ],
    schema_answers=True,  # past the script, answer any output_schema with a valid instance
)

with steptrace.run("offline-agent") as run:
    result = agent_loop(
        "Which city is bigger, Paris or Lyon?",
        tools=[population],
        model="gpt-4o-mini",
        provider=provider,
        output_schema=Answer,
    )
    print(result.status, result.data)  # done Answer(city='Paris', population=2102650)
    # The script is used up: the provider now builds a valid Answer by itself.
    again = agent_loop("And now?", model="gpt-4o-mini", provider=provider, output_schema=Answer)
    print(again.data)  # Answer(city='a', population=0)
print(run.usage().total_tokens, "tokens")
