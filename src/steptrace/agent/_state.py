"""The mutable state of one agent run, shared by the loop and the tool dispatcher.

The working transcript (what the model sees, shortened by compaction: a
``CheckedMessages``, which keeps its running size for the compaction check and
the model call's pre-flight estimate), the full transcript (everything,
archived turns included), the phase position,
the iteration, the tools used and succeeded, and the usage the run's model
calls reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..llm._call import CheckedMessages
from ..llm._types import LlmResult, Message
from ._compaction import tokens_of
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

    def __post_init__(self) -> None:
        # Checked once here, then only ever appended Messages (``add``): the
        # model call takes it without checking each message again every turn.
        self.messages = CheckedMessages(self.messages)

    @property
    def phase(self) -> Phase | None:
        return self.phases[self.phase_index] if self.phases else None

    @property
    def tokens(self) -> int:
        """``estimate_tokens(self.messages)``, counting only the messages added
        since the last time (each message is measured once, for this and for
        the model call's pre-flight estimate alike)."""
        messages = self.messages
        assert type(messages) is CheckedMessages  # __post_init__, compacted
        return tokens_of(messages.chars(), len(messages))

    def add(self, message: Message) -> None:
        self.messages.append(message)
        self.transcript.append(message)

    def compacted(self, messages: Sequence[Message]) -> None:
        """Replace the working transcript (after a compaction)."""
        self.messages = CheckedMessages(messages)

    def count(self, result: LlmResult) -> None:
        self.input_tokens += result.input_tokens
        self.output_tokens += result.output_tokens
        self.llm_calls += result.attempts
        self.cost_usd = (
            None
            if result.cost_usd is None or self.cost_usd is None
            else self.cost_usd + result.cost_usd
        )
