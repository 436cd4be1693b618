"""Steps made once on the compiled call and once on the pure-Python reference.

``decorate_step(accelerated, ...)`` is ``steptrace.step(...)`` with the
accelerator ``steptrace._speedups.step`` used or not, and ``pure_python(True)``
also makes user spans' frames with the reference ``span_frame``, so one
process can run the same program both ways and compare the records. Without the accelerator built,
both modes are the reference (the tests that need it built say so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import steptrace
from steptrace import _context, _wrappers

MODES = [True, False]
MODE_IDS = ["accelerated", "pure"]


@contextmanager
def pure_python(on: bool) -> Iterator[None]:
    """While on, new sync steps take the pure-Python call and user spans the
    pure-Python ``span_frame`` (the references)."""
    saved, saved_span_frame = _wrappers._step_speedup, _context.span_frame
    if on:
        _wrappers._step_speedup = None
        _context.span_frame = _context.reference_span_frame
    try:
        yield
    finally:
        _wrappers._step_speedup, _context.span_frame = saved, saved_span_frame


def decorate_step(accelerated: bool, fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
    with pure_python(not accelerated):
        wrapped: Callable[..., Any] = steptrace.step(**options)(fn)
    return wrapped
