"""The mutable state of one agent run, shared by the loop and the tool dispatcher.

The working transcript (what the model sees, shortened by compaction) and the
full transcript (everything, archived turns included), the phase position,
the iteration, the tools used and succeeded, and the usage the run's model
calls reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..llm._types import LlmResult, Message
from ._policy import Phase

__all__ = ["LoopState"]


@dataclass
class LoopState:
    """The loop's mutable state across iterations."""

    messages: list[Message]
    transcript: list[Message]
    phases: Sequence[Phase]
    phase_index: int = 0
    phase_turns: int = 0
    iteration: int = 0
    tools_used: dict[str, None] = field(default_factory=dict)
    successful_tools: dict[str, None] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    cost_usd: float | None = 0.0
    text: str = ""
    data: Any = None
    rejected_turns: int = 0

    @property
    def phase(self) -> Phase | None:
        return self.phases[self.phase_index] if self.phases else None

    def add(self, message: Message) -> None:
        self.messages.append(message)
        self.transcript.append(message)

    def count(self, result: LlmResult) -> None:
        self.input_tokens += result.input_tokens
        self.output_tokens += result.output_tokens
        self.llm_calls += result.attempts
        self.cost_usd = (
            None
            if result.cost_usd is None or self.cost_usd is None
            else self.cost_usd + result.cost_usd
        )
