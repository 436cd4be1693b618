"""The CLI's pure pieces, in process: reading ``--since``, number formats,
table alignment, and the replay command's provider pin."""

from __future__ import annotations

import argparse
import re
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steptrace.cli._render import Style, format_duration, format_usd, table
from steptrace.cli._runs_command import parse_since

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(_UNITS)))
def test_since_a_span_back_from_now(amount: int, unit: str) -> None:
    now = 1_800_000_000.0
    assert parse_since(f"{amount}{unit}", now=now) == now - amount * _UNITS[unit]


def test_since_a_local_date_or_time_and_a_clear_error_otherwise() -> None:
    assert parse_since("2026-11-21") == datetime(2026, 11, 21).timestamp()
    assert parse_since("2026-11-21T14:30") == datetime(2026, 11, 21, 14, 30).timestamp()
    with pytest.raises(argparse.ArgumentTypeError, match="cannot read 'last tuesday' as a time"):
        parse_since("last tuesday")


def test_money_and_durations_read_well_at_every_scale() -> None:
    assert [format_usd(v) for v in (None, 0, 0.00042, 0.1234, 12.5, 1234.5)] == [
        "-",
        "$0",
        "$0.000420",
        "$0.1234",
        "$12.50",
        "$1,234.50",
    ]
    assert [format_duration(v) for v in (None, 0.012, 3.24, 245, 3725)] == [
        "-",
        "12 ms",
        "3.2 s",
        "4m 05s",
        "1h 02m",
    ]


@given(
    st.lists(
        st.tuples(st.text("abc-xyz", max_size=12), st.text("0123456789", max_size=8)),
        max_size=6,
    )
)
def test_table_columns_line_up_with_or_without_colour(rows: list[tuple[str, str]]) -> None:
    cells = [[name, number] for name, number in rows]
    plain = table(["NAME", "N"], cells, right=(1,))
    painted = table(
        ["NAME", "N"],
        cells,
        right=(1,),
        painters=[[lambda text: Style(True).status("failed", text), None] for _ in cells],
        style=Style(True),
    )
    assert re.sub(r"\x1b\[[0-9;]*m", "", painted) == plain
    lines = plain.split("\n")
    width = max(4, *(len(name) for name, _ in rows)) if rows else 4
    for line, (_, number) in zip(lines[1:], rows, strict=True):
        assert line[width + 2 :].strip() == number  # the number column starts after NAME's
