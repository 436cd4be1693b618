"""steptrace.agent: a budgeted, traced tool-using agent loop.

``agent_loop``/``aagent_loop`` run a model with ``@tool`` functions until it
answers without calling a tool, emitting every agent trace event of the seed:
``LlmCall``, ``ToolExecution``, ``ToolRejected``, ``LoopIntervention``,
``ContextCompaction``, ``PhaseChange``, ``LoopComplete`` and ``SchemaRetry``.
"""

from ._compaction import Compaction
from ._limits import ToolLimits
from ._loop import AgentResult, aagent_loop, agent_loop, agent_result_of
from ._loop_detection import LoopDetection
from ._policy import NEXT_PHASE_TOOL, Phase, ToolPolicy
from ._tools import MutationClass, Tool, ToolTimeout, configure_tool_threads, tool, tool_threads

__all__ = [
    "NEXT_PHASE_TOOL",
    "AgentResult",
    "Compaction",
    "LoopDetection",
    "MutationClass",
    "Phase",
    "Tool",
    "ToolLimits",
    "ToolPolicy",
    "ToolTimeout",
    "aagent_loop",
    "agent_loop",
    "agent_result_of",
    "configure_tool_threads",
    "tool",
    "tool_threads",
]
