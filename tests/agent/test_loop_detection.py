"""LoopTracker: counts of identical calls (tool, arguments, result), the warn ->
block -> skip sequence and its notes, progress resetting a count, canonical
arguments, the disabled switch, and LoopDetection validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steptrace.agent._loop_detection import (
    Intervention,
    LoopDetection,
    LoopTracker,
    canonical_arguments,
)


def _kinds(
    tracker: LoopTracker, calls: int, tool: str = "read", args: dict[str, Any] | None = None
) -> list[str | None]:
    args = {"path": "a.txt"} if args is None else args
    kinds: list[str | None] = []
    for _ in range(calls):
        skip = tracker.before_call(tool, args)
        if skip is not None:
            kinds.append(skip.kind)
            continue
        hit = tracker.after_call(tool, args, "same")
        kinds.append(None if hit is None else hit.kind)
    return kinds


def test_defaults() -> None:
    assert LoopDetection() == LoopDetection(warn_after=3, block_after=5, enabled=True)


def test_warn_then_block_then_skip_with_counts() -> None:
    tracker = LoopTracker(LoopDetection(warn_after=2, block_after=4))
    args = {"path": "a.txt"}
    assert tracker.before_call("read", args) is None
    assert tracker.after_call("read", args, "hello") is None

    warn = tracker.after_call("read", args, "hello")
    assert warn is not None
    assert (warn.kind, warn.count) == ("warn", 2)
    third = tracker.after_call("read", args, "hello")
    assert third is not None
    assert (third.kind, third.count) == ("warn", 3)

    assert tracker.before_call("read", args) is None  # not blocked yet: it runs
    block = tracker.after_call("read", args, "hello")
    assert block is not None
    assert (block.kind, block.count) == ("block", 4)

    skip = tracker.before_call("read", args)
    assert skip is not None
    assert (skip.kind, skip.count) == ("skip", 5)
    again = tracker.before_call("read", args)
    assert again is not None
    assert (again.kind, again.count) == ("skip", 6)


def test_default_thresholds_sequence() -> None:
    tracker = LoopTracker(LoopDetection())
    assert _kinds(tracker, 7) == [None, None, "warn", "warn", "block", "skip", "skip"]


def test_block_after_is_a_block_however_often_it_is_reached() -> None:
    # A loop that ignores skip and keeps reporting results still gets blocks.
    tracker = LoopTracker(LoopDetection(warn_after=1, block_after=2))
    args = {"q": 1}
    hits = [tracker.after_call("search", args, "r") for _ in range(4)]
    assert [(h.kind, h.count) for h in hits if h is not None] == [
        ("warn", 1),
        ("block", 2),
        ("block", 3),
        ("block", 4),
    ]


def test_notes_name_the_tool_and_count_and_say_what_to_do() -> None:
    tracker = LoopTracker(LoopDetection(warn_after=2, block_after=3))
    args = {"pattern": "TODO"}
    tracker.after_call("grep", args, "nothing")
    warn = tracker.after_call("grep", args, "nothing")
    block = tracker.after_call("grep", args, "nothing")
    skip = tracker.before_call("grep", args)
    assert warn is not None
    assert block is not None
    assert skip is not None
    for hit in (warn, block, skip):
        assert "`grep`" in hit.note
        assert str(hit.count) in hit.note
    assert "2 times" in warn.note
    assert "blocked" in warn.note  # says what comes next
    assert "3 times" in block.note
    assert "Do not call `grep`" in block.note
    assert "must stop repeating" in skip.note
    assert "try something else" in skip.note.lower()


def test_apply() -> None:
    warn = Intervention("warn", 3, "NOTE")
    assert LoopTracker.apply("result", warn) == "result\n\nNOTE"
    tracker = LoopTracker(LoopDetection())
    assert tracker.apply("result", warn) == "result\n\nNOTE"
    assert tracker.apply("result", Intervention("block", 5, "NOTE")) == "NOTE"
    assert tracker.apply("", Intervention("skip", 6, "NOTE")) == "NOTE"


def test_changing_result_resets_the_count() -> None:
    tracker = LoopTracker(LoopDetection(warn_after=2, block_after=3))
    args = {"job": "build"}
    assert tracker.after_call("status", args, "running") is None
    hit = tracker.after_call("status", args, "running")
    assert hit is not None
    assert hit.kind == "warn"
    assert tracker.after_call("status", args, "done") is None  # progress: count 1
    hit = tracker.after_call("status", args, "done")
    assert hit is not None
    assert (hit.kind, hit.count) == ("warn", 2)
    assert tracker.after_call("status", args, "running") is None  # back, but changed
    assert tracker.before_call("status", args) is None


def test_other_calls_in_between_do_not_reset_a_count() -> None:
    tracker = LoopTracker(LoopDetection(warn_after=2, block_after=3))
    assert tracker.after_call("read", {"path": "a"}, "A") is None
    assert tracker.after_call("read", {"path": "b"}, "B") is None
    assert tracker.after_call("list", {"path": "a"}, "A") is None  # other tool, same args
    hit = tracker.after_call("read", {"path": "a"}, "A")
    assert hit is not None
    assert (hit.kind, hit.count) == ("warn", 2)


def test_keys_are_tool_and_arguments() -> None:
    tracker = LoopTracker(LoopDetection(warn_after=2, block_after=3))
    for path in ("a", "b", "c"):
        assert tracker.after_call("read", {"path": path}, "same text") is None
    for tool in ("read_file", "cat"):
        assert tracker.after_call(tool, {"path": "a"}, "same text") is None
    # Blocking one key leaves the others runnable.
    tracker.after_call("read", {"path": "a"}, "same text")
    tracker.after_call("read", {"path": "a"}, "same text")
    assert tracker.before_call("read", {"path": "a"}) is not None
    assert tracker.before_call("read", {"path": "b"}) is None
    assert tracker.before_call("cat", {"path": "a"}) is None


def test_argument_order_does_not_matter() -> None:
    tracker = LoopTracker(LoopDetection(warn_after=2, block_after=3))
    assert (
        tracker.after_call("search", {"q": "x", "limit": 5, "opts": {"b": 1, "a": 2}}, "r") is None
    )
    hit = tracker.after_call("search", {"opts": {"a": 2, "b": 1}, "limit": 5, "q": "x"}, "r")
    assert hit is not None
    assert hit.kind == "warn"


def test_non_json_arguments_are_keyed_by_their_text() -> None:
    class Point:
        def __str__(self) -> str:
            return "Point(1, 2)"

    tracker = LoopTracker(LoopDetection(warn_after=2, block_after=3))
    assert tracker.after_call("plot", {"at": Point()}, "ok") is None
    hit = tracker.after_call("plot", {"at": Point()}, "ok")
    assert hit is not None
    assert hit.kind == "warn"


def test_disabled_never_intervenes() -> None:
    tracker = LoopTracker(LoopDetection(enabled=False))
    assert _kinds(tracker, 20) == [None] * 20


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"warn_after": 0}, ValueError, "warn_after must be a positive int"),
        ({"warn_after": -1}, ValueError, "warn_after"),
        ({"warn_after": 2.0}, TypeError, "warn_after"),
        ({"warn_after": True}, TypeError, "warn_after"),
        ({"block_after": 0}, ValueError, "block_after must be a positive int"),
        ({"block_after": "5"}, TypeError, "block_after"),
        ({"warn_after": 5, "block_after": 5}, ValueError, r"warn_after \(5\).*block_after \(5\)"),
        ({"warn_after": 6, "block_after": 4}, ValueError, "less than block_after"),
        ({"enabled": "yes"}, TypeError, "enabled must be a bool"),
    ],
)
def test_validation_names_the_field(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LoopDetection(**kwargs)


def test_tracker_needs_a_config() -> None:
    with pytest.raises(TypeError, match="LoopDetection"):
        LoopTracker({"warn_after": 3})  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
odd_values = st.sampled_from([object, {1, 2}, b"x", 1j, (1, "a")])


@given(
    st.dictionaries(st.text(max_size=4), json_values | odd_values, max_size=4)
    | st.dictionaries(st.integers() | st.text(max_size=2), st.integers(), max_size=3)
)
def test_the_trackers_key_is_the_canonical_text_of_the_arguments(arguments: dict[Any, Any]) -> None:
    # The tracker keys calls with its own C encoder, not ``canonical_arguments``;
    # both must give the same text, whatever the arguments (mixed-type keys
    # take the fallback path, and the encoder stays usable after it).
    tracker = LoopTracker(LoopDetection())
    for _ in range(2):
        assert tracker._key("t", arguments) == ("t", canonical_arguments(arguments))


def test_the_trackers_key_of_a_cycle_is_canonical_and_the_next_key_still_is() -> None:
    cyclic: dict[str, Any] = {"a": [1]}
    cyclic["a"].append(cyclic)
    tracker = LoopTracker(LoopDetection())
    assert tracker._key("t", cyclic) == ("t", canonical_arguments(cyclic))
    assert tracker._key("t", {"a": [1, {"b": 2}]}) == ("t", '{"a": [1, {"b": 2}]}')
