"""The live progress display: what it draws for a run in progress (in process,
frame by frame, no clock involved) and what a terminal receives from
``steptrace run`` and ``show`` (a real pseudo-terminal; the script waits on
the test, so the frame checked is the one drawn while ``fetch`` is open)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import steptrace
from steptrace.cli._live import LiveDisplay
from steptrace.cli._render import Style

from .conftest import ENTRY, PIPELINE, cli_env, read_runs


@pytest.fixture
def display() -> Iterator[tuple[LiveDisplay, io.StringIO]]:
    stream = io.StringIO()
    live = LiveDisplay(stream, tty=True, style=Style(False))
    steptrace.add_span_processor(live)
    yield live, stream
    steptrace.remove_span_processor(live)


def test_a_frame_shows_the_current_step_and_every_budget_it_draws_from(
    display: tuple[LiveDisplay, io.StringIO],
) -> None:
    live, _ = display
    frames: list[list[str]] = []

    @steptrace.step(budget={"max_tokens": 1000})
    def fetch() -> None:
        steptrace.record_llm_usage("m", 100, 20, cost_usd=0.002)
        frames.append(live.frame_lines(now=run.started_at + 3.2))

    @steptrace.persona("analyst", budget={"max_usd": 0.01})
    def analyst() -> None:
        fetch()
        frames.append(live.frame_lines(now=run.started_at + 4))

    with steptrace.run("nightly", budget={"max_usd": 1}) as run:
        analyst()
    header, *budgets = frames[0]
    assert header == "\x00bold\x00steptrace > nightly  3 s  step fetch"
    assert [line.split("\x00")[2].split() for line in budgets] == [
        ["run", "nightly", "120", "tok", "$0.002000", "/", "$1", "[#.........]", "0%"],
        ["persona", "analyst", "120", "tok", "$0.002000", "/", "$0.01", "[##........]", "20%"],
        ["step", "fetch", "120", "/", "1,000", "tok", "$0.002000", "[#.........]", "12%"],
    ]
    # Out of the step, in the persona: the step's budget line is gone.
    assert [line.split("\x00")[2].split()[:2] for line in frames[1][1:]] == [
        ["run", "nightly"],
        ["persona", "analyst"],
    ]
    assert frames[1][0] == "\x00bold\x00steptrace > nightly  4 s  persona analyst"


def test_budget_lines_turn_yellow_then_red_as_the_budget_runs_out(
    display: tuple[LiveDisplay, io.StringIO],
) -> None:
    live, _ = display
    colours: list[str] = []

    @steptrace.step(budget={"max_tokens": 100}, error_boundary="continue")
    def greedy() -> None:
        for tokens in (50, 35, 30):
            try:
                steptrace.record_llm_usage("m", tokens, 0, cost_usd=0.0)
            except steptrace.BudgetExhausted:  # recorded, then refused: 115 > 100
                pass
            colours.append(live.frame_lines(now=run.started_at)[-1].split("\x00")[1])

    with steptrace.run("r") as run:
        greedy()
    assert colours == ["green", "yellow", "red"]


def test_drawing_replaces_the_block_in_place_and_script_output_goes_above_it(
    display: tuple[LiveDisplay, io.StringIO],
) -> None:
    live, stream = display

    @steptrace.step
    def work() -> None:
        steptrace.record_llm_usage("m", 10, 5, cost_usd=0.0)
        live.tick(now=run.started_at + 1)
        live.tick(now=run.started_at + 1)  # nothing changed: nothing drawn
        live.write_through(stream, "a line of the script\n")
        live.tick(now=run.started_at + 2)

    with steptrace.run("r") as run:
        work()
    live.stop()
    erase_two_lines = "\r\x1b[2K\x1b[1A\x1b[2K"
    budget_line = f"  {'run':<8} {'r':<24} {'15 tok':>22}  {'$0':>22}"  # no budget: no bar
    assert stream.getvalue() == (
        f"steptrace > r  1 s  step work\n{budget_line}"
        f"{erase_two_lines}a line of the script\n"
        f"steptrace > r  2 s  step work\n{budget_line}"
        f"{erase_two_lines}"
    )


def test_not_on_a_terminal_a_plain_line_now_and_then(
    display: tuple[LiveDisplay, io.StringIO],
) -> None:
    live, stream = display
    live.tty = False

    @steptrace.step(budget={"max_tokens": 1000})
    def fetch() -> None:
        steptrace.record_llm_usage("m", 100, 20, cost_usd=0.0)

    with steptrace.run("r") as run:
        live.tick(now=run.started_at + 1)  # no step ended yet: nothing
        fetch()
        live.tick(now=run.started_at + 5)
        fetch()
        live.tick(now=run.started_at + 5.5)  # within line_interval of the last line
    assert stream.getvalue() == (
        "[steptrace] r 5 s | 1 step done (last: fetch completed) | run r 120 tok $0\n"
    )


def _pty_run(
    args: list[str], cwd: Path, env: dict[str, str], answer_when: bytes | None
) -> tuple[int, bytes]:
    """Run ``steptrace`` on a 120x40 pseudo-terminal; when ``answer_when`` shows
    up in its output, type a newline. Returns the exit code and all output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [*ENTRY, *args], cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    output = b""
    answered = answer_when is None
    deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and answer_when is not None and answer_when in output:
                os.write(master, b"\n")
                answered = True
        code = process.wait(timeout=60)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    assert answered, output.decode(errors="replace")
    return code, output


def test_steptrace_run_on_a_terminal_draws_the_current_step_and_budgets_in_place(
    tmp_path: Path,
) -> None:
    env = cli_env({"TERM": "xterm"})
    frame_mark = b"120 / 1,000 tok"
    code, raw = _pty_run(["run", str(PIPELINE), "--wait"], tmp_path, env, frame_mark)
    assert code == 0, raw.decode(errors="replace")
    text = raw.decode()
    # The frame drawn while the script waited in `fetch`: from its header to
    # the next erase.
    mark = text.index("120 / 1,000 tok")
    start = text.rindex("steptrace ▸ pipeline", 0, mark)
    frame = text[start : text.index("\r\x1b[2K", mark)].split("\r\n")
    frame = [line.replace("\x1b[32m", "").replace("\x1b[0m", "") for line in frame if line]
    assert re.fullmatch(r"steptrace ▸ pipeline  \d+ s  step fetch", frame[0])
    assert [line.split() for line in frame[1:]] == [
        ["run", "pipeline", "120", "tok", "$0.000140"],
        ["persona", "analyst", "120", "tok", "$0.000140", "/", "$0.01", "█░░░░░░░░░", "1%"],
        ["step", "fetch", "120", "/", "1,000", "tok", "$0.000140", "█░░░░░░░░░", "12%"],
    ]
    assert "\x1b[1A\x1b[2K" in text  # redrawn in place
    assert "\x1b[32m" in text  # coloured on a terminal
    # The block is erased before the report: the last frame is not left behind.
    report = text[text.rindex("run `pipeline` completed") :]
    assert "steptrace ▸" not in report
    assert len(read_runs(tmp_path / ".steptrace" / "runs.db")) == 1


def test_quiet_draws_nothing_and_no_color_paints_nothing(tmp_path: Path) -> None:
    code, raw = _pty_run(
        ["run", "--quiet", str(PIPELINE)], tmp_path, cli_env({"TERM": "xterm"}), None
    )
    assert code == 0
    assert b"steptrace \xe2\x96\xb8" not in raw
    assert b"\x1b[1A" not in raw
    _, coloured = _pty_run(["show", "last"], tmp_path, cli_env({"TERM": "xterm"}), None)
    assert b"\x1b[32mcompleted" in coloured
    _, plain = _pty_run(["show", "last"], tmp_path, cli_env({"NO_COLOR": "1"}), None)
    assert b"\x1b[" not in plain
    assert b"completed" in plain
