"""``part_count``: a count reported as part of another reads as an int from 0
to its whole, whatever a server sent."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from steptrace.llm.counts import part_count

_ANYTHING = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(value=_ANYTHING, whole=st.one_of(st.integers(), _ANYTHING))
def test_a_part_is_an_int_within_its_whole(value: Any, whole: Any) -> None:
    part = part_count(value, whole)
    assert type(part) is int
    assert 0 <= part <= (whole if type(whole) is int and whole > 0 else 0)


@given(whole=st.integers(min_value=0, max_value=10**15), data=st.data())
def test_a_part_that_is_a_count_within_its_whole_is_kept(whole: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(min_value=0, max_value=whole))
    assert part_count(value, whole) == value


def test_booleans_and_floats_are_not_counts() -> None:
    assert part_count(True, 10) == 0
    assert part_count(3.0, 10) == 0
