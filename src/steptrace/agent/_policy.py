"""Which tools the agent may call: policy by name glob, persona and phase; phases.

``ToolPolicy`` allows and denies tools by ``fnmatch`` globs on their names
(deny wins), with overrides for personas (matched by glob on the persona name)
and for phases (by phase name); every policy that applies must allow a tool.
``Phase`` is one stage of an ordered plan (for example plan -> act -> verify):
the tool globs it allows, an optional iteration cap, and an optional exit
condition. The loop moves to the next phase when the model calls the built-in
``next_phase`` tool, when the cap is reached, or when the exit condition holds.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NEXT_PHASE_TOOL", "Phase", "ToolPolicy"]

NEXT_PHASE_TOOL = "next_phase"
"""The built-in tool the model calls to move to the next phase."""


def _globs(value: Sequence[str], owner: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise TypeError(f"{owner}: expected a list of tool name globs, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ToolPolicy:
    """Allow/deny tool names by glob; deny wins. ``personas`` and ``phases``
    add policies that also apply under a matching persona or in a phase."""

    allow: Sequence[str] = ("*",)
    deny: Sequence[str] = ()
    personas: Mapping[str, ToolPolicy] = field(default_factory=dict)
    phases: Mapping[str, ToolPolicy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", _globs(self.allow, "ToolPolicy.allow"))
        object.__setattr__(self, "deny", _globs(self.deny, "ToolPolicy.deny"))
        for kind, nested in (("personas", self.personas), ("phases", self.phases)):
            for key, value in nested.items():
                if not isinstance(value, ToolPolicy):
                    raise TypeError(f"ToolPolicy.{kind}[{key!r}] must be a ToolPolicy")

    def _own_verdict(self, tool: str) -> str | None:
        for pattern in self.deny:
            if fnmatch.fnmatchcase(tool, pattern):
                return f"tool `{tool}` is denied by policy ({pattern})"
        if not any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.allow):
            return f"tool `{tool}` is not allowed by policy"
        return None

    def denial(self, tool: str, *, persona: str | None, phase: str | None) -> str | None:
        """Why ``tool`` may not be called here, or None when it may."""
        reason = self._own_verdict(tool)
        if reason is not None:
            return reason
        for pattern, policy in self.personas.items():
            if fnmatch.fnmatchcase(persona or "", pattern):
                reason = policy.denial(tool, persona=persona, phase=phase)
                if reason is not None:
                    return f"{reason} for persona `{persona}`"
        if phase is not None and phase in self.phases:
            reason = self.phases[phase].denial(tool, persona=persona, phase=phase)
            if reason is not None:
                return f"{reason} in phase `{phase}`"
        return None


@dataclass(frozen=True)
class Phase:
    """One stage of the loop. ``tools`` are globs of the tools offered in it
    (None: all); ``max_iterations`` caps its model turns; ``exit_when`` is
    called after each turn with the transcript and ends the phase when true."""

    name: str
    tools: Sequence[str] | None = None
    max_iterations: int | None = None
    exit_when: Callable[[Sequence[Any]], bool] | None = None
    instructions: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Phase: name must be a non-empty string, got {self.name!r}")
        if self.tools is not None:
            object.__setattr__(self, "tools", _globs(self.tools, f"phase `{self.name}`.tools"))
        if self.max_iterations is not None and (
            isinstance(self.max_iterations, bool)
            or not isinstance(self.max_iterations, int)
            or self.max_iterations <= 0
        ):
            raise ValueError(
                f"phase `{self.name}`: max_iterations must be a positive int, "
                f"got {self.max_iterations!r}"
            )

    def offers(self, tool: str) -> bool:
        return self.tools is None or any(fnmatch.fnmatchcase(tool, p) for p in self.tools)
