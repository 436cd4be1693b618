"""Hostile text never acts on the terminal: every line the CLI prints shows
control characters as visible escapes.

Hypothesis generates names, errors, metadata and tool names made of escape
sequences (``ESC ] 0 ; title BEL``, ``ESC [ 2 J``), C0 and C1 controls, bidi
overrides, zero-width characters and line breaks mixed with ordinary text. A
real run carrying them in every field a person sees (run, persona and step
names, the run's error, metadata, an LLM call's model, a ``ToolRejected``
event) is stored in a real SQLite file, then every reading command prints it
with colour off and on: no line may hold a character that acts on a terminal
but the colour codes steptrace writes itself. The live display of
``steptrace run`` is drawn from the same run while it is open.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import steptrace
from steptrace.cli import main
from steptrace.cli._live import LiveDisplay
from steptrace.cli._render import Style, terminal_json, terminal_text
from steptrace.events import ToolRejected
from steptrace.spans import add_span_processor, remove_span_processor
from steptrace.store import record_runs
from steptrace.tracing import emit_event

# What the colour and the live display's redraw write: SGR, erase line, cursor up.
OUR_SEQUENCES = re.compile(r"\x1b\[[0-9;]*m|\r?\x1b\[2K|\x1b\[1A")

PAYLOADS = [
    "\x1b]0;pwned\x07\x1b[2J",  # set the title, clear the screen
    "\x1b[31mred\x1b[0m",
    "\x9b2J",  # C1 CSI
    "\x1bP+q\x1b\\",  # device control string
    "\u202egnp.exe",  # right-to-left override
    "a\u2066b\u2069c\u200b\ufeff",
    "line\nbreak\r\ttab",
    "\x00\x07\x08\x7f\x85",
    "\u2028\u2029",
]

HOSTILE_CHARS = st.sampled_from(
    [chr(c) for c in (*range(32), *range(0x7F, 0xA0))]
) | st.sampled_from(
    ["\u200e", "\u200f", "\u202a", "\u202b", "\u202d", "\u202e", "\u2066", "\u2069", "\u2028"]
)
HOSTILE = st.one_of(
    st.sampled_from(PAYLOADS),
    st.text(
        alphabet=st.one_of(HOSTILE_CHARS, st.characters(exclude_categories=["Cs"])),
        min_size=1,
        max_size=24,
    ),
).map(lambda text: "x" + text)  # never empty, never only spaces


def acting_characters(text: str) -> list[str]:
    """The characters of ``text`` (one line) that would act on a terminal."""
    plain = OUR_SEQUENCES.sub("", text)
    return [ch for ch in plain if terminal_text(ch) != ch]


def assert_safe(output: str, where: str) -> None:
    for line in output.split("\n"):
        bad = acting_characters(line)
        assert not bad, f"{where}: {line!r} holds {bad!r}"


def record(folder: Path, names: dict[str, str]) -> Path:
    """A failed run carrying ``names`` in every field the CLI shows."""
    db = folder / "runs.db"
    writer = record_runs(db)
    lines: list[str] = []
    display = LiveDisplay(io.StringIO(), tty=True, style=Style(True))
    plain = LiveDisplay(io.StringIO(), tty=False, style=Style(False), line_interval=0.0)
    add_span_processor(display)
    add_span_processor(plain)

    @steptrace.step(name=names["step"], budget={"max_tokens": 10_000, "max_usd": 1.0})
    def work() -> None:
        steptrace.record_llm_usage(names["model"], 10, 5, cost_usd=0.001)
        emit_event(ToolRejected(tool_name=names["tool"], reason=names["error"], iteration=1))
        lines.extend(display.frame_lines(0.0))
        display.tick()
        lines.append(plain.status_line(0.0))

    @steptrace.persona(name=names["persona"], budget={"max_usd": 1.0})
    def agent() -> None:
        work()
        raise RuntimeError(names["error"])

    try:
        with (
            contextlib.suppress(RuntimeError),
            steptrace.run(names["run"], metadata={names["key"]: names["value"]}),
        ):
            agent()
    finally:
        remove_span_processor(display)
        remove_span_processor(plain)
        writer.stop()
    stream = display.stream
    assert isinstance(stream, io.StringIO)
    assert_safe(stream.getvalue(), "live display (terminal)")
    for line in lines:
        assert_safe(display._fit(line, 1000), "live display line")
    assert_safe(lines[-1], "live display (plain line)")
    return db


def cli(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(list(argv))
    return out.getvalue() + err.getvalue()


FIELDS = ("run", "step", "persona", "error", "key", "value", "model", "tool")


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.fixed_dictionaries(dict.fromkeys(FIELDS, HOSTILE)))
def test_no_hostile_character_reaches_the_terminal(names: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        db = str(record(Path(scratch), names))
        for color in ("never", "always"):
            common = ("--store", db, "--color", color)
            for command in (
                ("runs",),
                ("show", "last"),
                ("show", "last", "--events", "--spans"),
                ("show", "last", "--type", "tool_rejected"),
                ("runs", "--json"),
                ("show", "last", "--json", "--events"),
                ("export", "last", "-o", "-"),
                ("export", "last", "--format", "otlp-json", "-o", "-"),
                ("show", names["run"]),  # an error line quoting the argument
                ("prices", names["model"]),
            ):
                assert_safe(cli(*common, *command), f"steptrace {' '.join(command[:3])!r}")
        # The stored text itself is kept as it was: only its display is escaped.
        shown = cli("--store", db, "show", "last", "--json")
        assert json.loads(shown)["run"]["name"] == names["run"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_escapes_are_visible_and_json_still_parses(payload: str) -> None:
    shown = terminal_text(payload)
    assert not acting_characters(shown)
    assert "\\" in shown  # what was there is shown, not dropped
    data: Any = {"name": payload}
    text = terminal_json(json.dumps(data, ensure_ascii=False))
    assert not acting_characters(text)
    assert json.loads(text) == data


def test_colour_survives_and_plain_text_is_unchanged() -> None:
    style = Style(True)
    assert style.paint("ok", "green") == "\x1b[32mok\x1b[0m"
    assert style.paint("\x1b[2J", "green") == "\x1b[32m\\x1b[2J\x1b[0m"
    assert terminal_text("naïve 東京 café — ok") == "naïve 東京 café — ok"


RUN_SCRIPT = """
import json, sys
import steptrace
names = json.load(open(sys.argv[1]))
for name in names:
    @steptrace.step(name=name, budget={"max_tokens": 1000})
    def work():
        steptrace.record_llm_usage(name, 10, 5, cost_usd=0.001)
    work()
with steptrace.run(names[0], metadata={names[1]: names[2]}):
    work()
raise RuntimeError(names[-1])
"""


@pytest.mark.parametrize("color", ["never", "always"])
def test_steptrace_run_reports_hostile_names_escaped(tmp_path: Path, color: str) -> None:
    from tests.cli.conftest import run_cli

    (tmp_path / "names.json").write_text(json.dumps(PAYLOADS))
    (tmp_path / "job.py").write_text(RUN_SCRIPT)
    result = run_cli(
        "--color", color, "run", "--name", PAYLOADS[0], "job.py", "names.json", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert "RuntimeError" in result.stderr  # the script's traceback, escaped
    assert_safe(result.stdout, "steptrace run (stdout)")
    assert_safe(result.stderr, "steptrace run (stderr)")
    assert "\\x1b]0;pwned\\x07" in result.stderr
