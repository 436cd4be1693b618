"""Loop detection: spotting a model that repeats a tool call that changes nothing.

This module owns the loop detection configuration (``LoopDetection``), the
decision it produces (``Intervention``, whose ``kind`` is the ``kind`` of the
``LoopIntervention`` event) and the per-run state that makes the decision
(``LoopTracker``). It is pure logic: no I/O, no events; the agent loop emits
the events and edits the transcript.

A call is keyed by its tool name and its canonical arguments
(``json.dumps(arguments, sort_keys=True, default=str)``, so key order does not
matter). For each key the tracker remembers the last result and how many of
the key's calls in succession returned it (calls of other keys in between
change nothing): a different result is progress, so it starts the count again
at 1. The count of the
``warn_after``-th identical call through the one before ``block_after`` is a
``warn`` (the note is appended to the result); the ``block_after``-th and any
later one is a ``block`` (the result is replaced by the note) and marks the key
blocked. A blocked key is never run again in this tracker's life: ``before_call``
answers ``skip``, with the note as the result. Counts are the number of times
the key was seen, the current call included.

The loop's protocol, per tool call::

    if (hit := tracker.before_call(name, args)) is not None:   # blocked: don't run
        result = tracker.apply("", hit)
    else:
        raw = run_tool(name, args)
        hit = tracker.after_call(name, args, raw)              # the raw result
        result = raw if hit is None else tracker.apply(raw, hit)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .. import _json

__all__ = ["Intervention", "InterventionKind", "LoopDetection", "LoopTracker"]

InterventionKind = Literal["warn", "block", "skip"]

_PREFIX = "[steptrace loop detection]"


def _positive_int(owner: str, field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {field} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}: {field} must be a positive int, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class LoopDetection:
    """When the loop steps in: a ``warn`` note from the ``warn_after``-th identical
    call (same tool, arguments and result), a ``block`` from the
    ``block_after``-th; ``enabled=False`` switches detection off."""

    warn_after: int = 3
    block_after: int = 5
    enabled: bool = True

    def __post_init__(self) -> None:
        _positive_int("LoopDetection", "warn_after", self.warn_after)
        _positive_int("LoopDetection", "block_after", self.block_after)
        if self.warn_after >= self.block_after:
            raise ValueError(
                f"LoopDetection: warn_after ({self.warn_after}) must be less than "
                f"block_after ({self.block_after})"
            )
        if not isinstance(self.enabled, bool):
            raise TypeError(f"LoopDetection: enabled must be a bool, got {self.enabled!r}")


@dataclass(frozen=True, slots=True)
class Intervention:
    """What the loop does to one tool call: ``warn`` appends ``note`` to the
    result, ``block`` replaces the result with it, ``skip`` does not run the call
    and answers with it. ``count``: times the call was seen, this one included."""

    kind: InterventionKind
    count: int
    note: str


class _Seen:
    __slots__ = ("blocked", "count", "result")

    def __init__(self, result: str) -> None:
        self.result = result
        self.count = 1
        self.blocked = False


# ``json.dumps(arguments, sort_keys=True, default=str)``, built once (``_json``):
# the function (text or exception as json.dumps gives them) and the C encoder
# itself, which the tracker calls with no Python frame around it.
_canonical = _json.encoder(sort_keys=True, default=str)
_canonical_chunks = _json.chunks(sort_keys=True, default=str)
_join = "".join


def canonical_arguments(arguments: Mapping[str, Any]) -> str:
    """The arguments as a key: JSON with sorted keys, non-JSON values as ``str``."""
    try:
        return _canonical(dict(arguments))
    except (TypeError, ValueError):  # keys of mixed types cannot be sorted; cycles
        return _fallback_key(arguments)


def _fallback_key(arguments: Mapping[str, Any]) -> str:
    return repr(sorted(arguments.items(), key=lambda item: str(item[0])))


class LoopTracker:
    """The per-run loop detection state (one tracker per agent run; not
    thread-safe, the loop calls it from its own task)."""

    __slots__ = ("_any_blocked", "_seen", "config")

    def __init__(self, config: LoopDetection) -> None:
        if not isinstance(config, LoopDetection):
            raise TypeError(f"LoopTracker: expected a LoopDetection, got {config!r}")
        self.config = config
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._any_blocked = False  # lets before_call skip the key until a block

    @staticmethod
    def _key(tool_name: str, arguments: Mapping[str, Any]) -> tuple[str, str]:
        """``(tool_name, canonical_arguments(arguments))``, the common case
        straight from the C encoder."""
        try:
            text = _join(
                _canonical_chunks(arguments if type(arguments) is dict else dict(arguments), 0)
            )
        except Exception:  # what the C encoder alone refuses: canonical_arguments decides
            return tool_name, canonical_arguments(arguments)
        return tool_name, text

    def before_call(self, tool_name: str, arguments: Mapping[str, Any]) -> Intervention | None:
        """``skip`` when this exact call was blocked earlier (do not run it), else None."""
        if not self.config.enabled or not self._any_blocked:
            return None
        seen = self._seen.get(self._key(tool_name, arguments))
        if seen is None or not seen.blocked:
            return None
        seen.count += 1
        return Intervention(
            "skip",
            seen.count,
            f"{_PREFIX} Not run: `{tool_name}` with these arguments was blocked after "
            f"returning the same result again and again (this is attempt {seen.count}). "
            f"You must stop repeating this call. Try something else: different arguments, "
            f"a different tool, or give your answer with what you already have.",
        )

    def after_call(
        self, tool_name: str, arguments: Mapping[str, Any], result: str
    ) -> Intervention | None:
        """Count the call with its raw result; ``warn`` or ``block`` at the thresholds."""
        config = self.config
        if not config.enabled:
            return None
        key = self._key(tool_name, arguments)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen(result)
        elif seen.result == result:
            seen.count += 1
        else:  # a different result is progress
            seen.result = result
            seen.count = 1
        count = seen.count
        if count >= config.block_after:
            seen.blocked = self._any_blocked = True
            return Intervention(
                "block",
                count,
                f"{_PREFIX} Blocked: `{tool_name}` was called {count} times with the same "
                f"arguments and returned the same result every time, so its result is "
                f"withheld and this call will not run again. Do not call `{tool_name}` with "
                f"these arguments again: change the arguments, use a different tool, or "
                f"give your answer with what you already have.",
            )
        if count >= config.warn_after:
            return Intervention(
                "warn",
                count,
                f"{_PREFIX} Warning: `{tool_name}` has now been called {count} times with "
                f"the same arguments and returned the same result each time; calling it "
                f"again will not tell you anything new. Use the result you have, change the "
                f"arguments, or try a different approach. At {config.block_after} identical "
                f"calls it will be blocked.",
            )
        return None

    @staticmethod
    def apply(result: str, intervention: Intervention) -> str:
        """The result the model sees: ``warn`` appends the note, ``block`` and
        ``skip`` replace the result with it."""
        if intervention.kind == "warn":
            return f"{result}\n\n{intervention.note}"
        return intervention.note
