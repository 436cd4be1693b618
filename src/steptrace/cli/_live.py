"""The live progress display of ``steptrace run``: current step, tokens and
cost against each budget.

``LiveDisplay`` is a span processor. Its callbacks, on the run's threads, only
note which spans are open (under a small lock, no I/O); a daemon thread draws.
On a terminal it redraws a block of lines in place about ten times a second:
the run, its elapsed time and the current step (and LLM or tool call), then
one line per budget scope the current frame is charged to (run, personas,
budgeted steps) with tokens and cost used against the limit and a bar. While
it runs, ``sys.stdout`` and ``sys.stderr`` (when they are terminals) are
wrapped so that whatever the script prints first erases the block, and the
block is drawn again below it. Not on a terminal, it prints a plain line now
and then (at most every ``line_interval`` seconds, when steps have ended).
``stop()`` erases the block and restores the streams.

It reads the budget ledgers of live frames (``steptrace._context``) under
their run's lock, the same figures budgets are enforced with.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from .._context import Frame
from ..budget import Ledger, pico_to_usd
from ..spans import Span, SpanKind
from ._render import (
    Style,
    format_cost,
    format_duration,
    format_limit_usd,
    format_tokens,
    terminal_text,
)

if TYPE_CHECKING:
    from .._run import Run

__all__ = ["LiveDisplay"]

_BAR_WIDTH = 10
_ACTIVITY_KINDS = (SpanKind.LLM_CALL, SpanKind.TOOL)


class _GuardedStream:
    """A text stream that erases the live block before anything is written."""

    def __init__(self, inner: TextIO, display: LiveDisplay) -> None:
        self._inner = inner
        self._display = display

    def write(self, text: str) -> int:
        return self._display.write_through(self._inner, text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class LiveDisplay:
    """Draws a run's progress on ``stream`` (see the module docstring).

    ``tty``: redraw in place (else plain lines). Register it as a span
    processor, ``start()`` it, and ``stop()`` it when the script is done."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool,
        style: Style,
        interval: float = 0.1,
        line_interval: float = 2.0,
    ) -> None:
        self.stream = stream
        self.tty = tty
        self.style = style
        self.interval = interval
        self.line_interval = line_interval
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        self._unicode = encoding in ("utf8", "utf16", "utf32")
        self._lock = threading.Lock()
        self._open: dict[int, Span] = {}
        self._runs: list[Run] = []
        self._steps_ended = 0
        self._last_step: tuple[str, str] | None = None
        self._draw_lock = threading.Lock()
        self._drawn = 0
        """Lines of the block now on screen."""
        self._at_line_start = True
        self._last_text = ""
        self._lines_printed_at = 0.0
        self._steps_at_last_line = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wrapped: list[tuple[str, TextIO]] = []

    # -- the SpanProcessor protocol (the run's threads: no I/O here) -------------

    def on_start(self, span: Span) -> None:
        run: Run | None = getattr(span, "run", None)
        if run is None or run.is_default:
            return
        with self._lock:
            self._open[span.span_id] = span
            if span is run.root:
                self._runs.append(run)

    def on_end(self, span: Span) -> None:
        with self._lock:
            if self._open.pop(span.span_id, None) is None:
                return
            if span.kind is SpanKind.STEP:
                self._steps_ended += 1
                status = span.metadata.get("status", span.status)
                self._last_step = (span.name, str(status))

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        if self.tty:
            for name in ("stdout", "stderr"):
                current = getattr(sys, name)
                isatty = getattr(current, "isatty", None)
                if isatty is not None and isatty():
                    self._wrapped.append((name, current))
                    setattr(sys, name, _GuardedStream(current, self))
        self._thread = threading.Thread(target=self._loop, name="steptrace-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for name, original in self._wrapped:
            if isinstance(getattr(sys, name), _GuardedStream):
                setattr(sys, name, original)
        self._wrapped.clear()
        with self._draw_lock:
            self._erase()
            self._flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # never let the display break the run
                return

    # -- drawing --------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.tty:
            lines = self.frame_lines(now)
            text = "\n".join(lines)
            if text != self._last_text:
                self._draw(lines)
            return
        with self._lock:
            ended = self._steps_ended
        if ended > self._steps_at_last_line and now - self._lines_printed_at >= self.line_interval:
            self._steps_at_last_line = ended
            self._lines_printed_at = now
            line = self.status_line(now)
            if line:
                with self._draw_lock:
                    self.stream.write(line + "\n")
                    self._flush()

    def write_through(self, inner: TextIO, text: str) -> int:
        """Write the script's ``text`` to ``inner`` with the block out of the way."""
        with self._draw_lock:
            self._erase()
            written = inner.write(text)
            if text:
                self._at_line_start = text.endswith("\n")
            self._last_text = ""  # draw again on the next tick
            return written

    def _draw(self, lines: list[str]) -> None:
        width = self._width()
        shown = [self._fit(line, width) for line in lines]
        with self._draw_lock:
            out = self._erase_sequence()
            if not self._at_line_start:
                out += "\n"
                self._at_line_start = True
            out += "\n".join(shown)
            self.stream.write(out)
            self._flush()
            self._drawn = len(shown)
            self._last_text = "\n".join(lines)

    def _erase_sequence(self) -> str:
        if not self._drawn:
            return ""
        return "\r\x1b[2K" + "\x1b[1A\x1b[2K" * (self._drawn - 1)

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write(self._erase_sequence())
            self._drawn = 0

    def _flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _width(self) -> int:
        try:
            return max(20, os.get_terminal_size(self.stream.fileno()).columns)
        except (OSError, ValueError, AttributeError):
            return 100

    def _fit(self, line: str, width: int) -> str:
        # Painted lines carry escape codes: fit on the plain text, paint after.
        # Names in it are hostile (a model may choose them): made safe first.
        plain, paint = line, None
        if line.startswith("\x00"):
            paint, plain = line[1:].split("\x00", 1)
        plain = terminal_text(plain)
        if len(plain) > width - 1:
            plain = plain[: width - 2] + ("…" if self._unicode else "~")
        return plain if paint is None else self.style.paint(plain, *paint.split(","))

    # -- what is shown ----------------------------------------------------------------

    def _state(self) -> tuple[Run | None, Span | None, tuple[int, tuple[str, str] | None]]:
        with self._lock:
            if not self._runs:
                return None, None, (self._steps_ended, self._last_step)
            open_runs = [r for r in self._runs if r.ended_at is None]
            run = open_runs[-1] if open_runs else self._runs[-1]
            current = next((s for s in reversed(self._open.values()) if s.run_id == run.id), None)
            return run, current, (self._steps_ended, self._last_step)

    def frame_lines(self, now: float) -> list[str]:
        """The block for a terminal: a header line, then one line per budget
        scope (lines starting with ``\\0styles\\0`` are painted whole)."""
        run, current, _ = self._state()
        if run is None:
            return []
        header = f"steptrace ▸ {run.name}" if self._unicode else f"steptrace > {run.name}"
        header += f"  {_elapsed(now - run.started_at)}"
        where = _where(current)
        if where:
            header += f"  {where}"
        lines = [f"\x00bold\x00{header}"]
        lines.extend(self._ledger_line(ledger) for ledger in _ledgers(run, current))
        return lines

    def _ledger_line(self, ledger: Ledger) -> str:
        tokens = ledger.input_tokens + ledger.output_tokens
        token_text = format_tokens(tokens)
        if ledger.max_tokens is not None:
            token_text += f" / {format_tokens(ledger.max_tokens)}"
        token_text += " tok"
        cost = pico_to_usd(ledger.cost_pico)
        cost_text = format_cost(cost, ledger.unpriced_calls)
        if ledger.max_pico is not None:
            cost_text += f" / {format_limit_usd(pico_to_usd(ledger.max_pico))}"
        pct = ledger.budget_pct()
        text = f"  {ledger.kind:<8} {ledger.name[:24]:<24} {token_text:>22}  {cost_text:>22}"
        if pct is None:
            return text
        text += f"  {self._bar(pct)} {_pct_text(pct):>4}"
        colour = "red" if pct > 100 else "yellow" if pct >= 80 else "green"
        return f"\x00{colour}\x00{text}"

    def _bar(self, pct: float) -> str:
        filled = 0 if pct <= 0 else min(_BAR_WIDTH, max(1, round(pct / 100 * _BAR_WIDTH)))
        if self._unicode:
            return "█" * filled + "░" * (_BAR_WIDTH - filled)
        return "[" + "#" * filled + "." * (_BAR_WIDTH - filled) + "]"

    def status_line(self, now: float) -> str:
        """One plain line: the run, steps done, and every budget scope's use."""
        run, current, (ended, last) = self._state()
        if run is None:
            return ""
        parts = [f"[steptrace] {run.name} {_elapsed(now - run.started_at)}"]
        done = f"{ended} step{'s' if ended != 1 else ''} done"
        if last is not None:
            done += f" (last: {last[0]} {last[1]})"
        parts.append(done)
        for ledger in _ledgers(run, current):
            tokens = format_tokens(ledger.input_tokens + ledger.output_tokens)
            if ledger.max_tokens is not None:
                tokens += f"/{format_tokens(ledger.max_tokens)}"
            cost = format_cost(pico_to_usd(ledger.cost_pico), ledger.unpriced_calls)
            if ledger.max_pico is not None:
                cost += f"/{format_limit_usd(pico_to_usd(ledger.max_pico))}"
            pct = ledger.budget_pct()
            share = "" if pct is None else f" ({_pct_text(pct)})"
            parts.append(f"{ledger.kind} {ledger.name} {tokens} tok {cost}{share}")
        return terminal_text(" · ".join(parts) if self._unicode else " | ".join(parts))


def _elapsed(seconds: float) -> str:
    # Whole seconds: the block is redrawn when its text changes, not every tick.
    seconds = max(0.0, seconds)
    return f"{int(seconds)} s" if seconds < 60 else format_duration(seconds)


def _pct_text(pct: float) -> str:
    return "over" if pct == float("inf") else f"{pct:.0f}%"


def _where(current: Span | None) -> str:
    """``step fetch > chat gpt-4o``: the current step and call."""
    if not isinstance(current, Frame):
        return ""
    parts = []
    step = current.step
    if step is not None:
        parts.append(f"step {step.name}")
    elif current.persona is not None:
        parts.append(f"persona {current.persona.name}")
    if current.kind in _ACTIVITY_KINDS:
        parts.append(current.name)
    return " > ".join(parts)


def _ledgers(run: Run, current: Span | None) -> list[Ledger]:
    """Copies of the budget ledgers the current frame is charged to, outermost
    first, taken under the run's lock (the live ones keep changing)."""
    frame = current if isinstance(current, Frame) else run.root
    with run.lock:
        return [_copy(ledger) for ledger in reversed(frame.accounted)]


def _copy(ledger: Ledger) -> Ledger:
    copy = Ledger(ledger.kind, ledger.name, ledger.max_tokens, ledger.max_pico)
    copy.input_tokens = ledger.input_tokens
    copy.output_tokens = ledger.output_tokens
    copy.cost_pico = ledger.cost_pico
    copy.llm_calls = ledger.llm_calls
    copy.unpriced_calls = ledger.unpriced_calls
    return copy
