"""Wrappers that push a scope for exactly as long as a function's body runs.

One wrapper per kind of function: a plain or ``async`` function holds its frame
for the whole call; a generator or async generator holds it for each
resumption only, setting and resetting the ContextVar within that resumption,
so whatever the consumer does between items is not charged to the step and the
token is always reset in the context that set it, whoever drives or finalizes
the generator. ``_wrap_sync_step`` is the plain step call with the scope's open
and complete inlined: the path almost every step call takes. When the
compiled accelerator ``steptrace._speedups.step`` is built (and not turned off
by ``STEPTRACE_PURE_PYTHON=1``), calls of that function run in C, doing what
its Python body does; the body stays the reference.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Callable, Generator
from time import time_ns
from typing import Any

from . import _context, _speedups
from . import spans as _spans
from ._run import active_frame
from ._scopes import Scope, StepScope, reset_token
from .definitions import StepDefinition
from .hooks import registered_hooks

_step_frame = _context.step_frame
_get_frame = _context.get_frame
_set_frame = _context.set_frame
_reset_frame = _context.reset_frame

_step_speedup = _speedups.load("step")
if _step_speedup is not None:
    # What a compiled step call reads, the same objects the Python body reads.
    _step_speedup.configure(
        _context._active,
        StepDefinition,
        vars(_spans),  # processors, rebound on registration
        registered_hooks,
        active_frame,
        _step_frame,
    )


# Code object flags (CPython's CO_* values, stable since 3.6). Reading them
# spares the core an import of ``inspect``, which costs ~6 ms.
_CO_GENERATOR = 0x20
_CO_COROUTINE = 0x80
_CO_ASYNC_GENERATOR = 0x200


def wrap(fn: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    code = getattr(fn, "__code__", None)
    if code is not None:
        flags = code.co_flags
        is_async_gen = bool(flags & _CO_ASYNC_GENERATOR)
        is_gen = bool(flags & _CO_GENERATOR)
        is_coroutine = bool(flags & _CO_COROUTINE)
    else:  # a partial or a callable object: let inspect unwrap it
        import inspect

        is_async_gen = inspect.isasyncgenfunction(fn)
        is_gen = inspect.isgeneratorfunction(fn)
        is_coroutine = inspect.iscoroutinefunction(fn)
    if is_async_gen:
        wrapper = _wrap_async_gen(fn, scope)
    elif is_gen:
        wrapper = _wrap_gen(fn, scope)
    elif is_coroutine:
        wrapper = _wrap_async(fn, scope)
    elif isinstance(scope, StepScope):
        wrapper = _wrap_sync_step(fn, scope)
    else:
        wrapper = _wrap_sync(fn, scope)
    return functools.wraps(fn)(wrapper)


def _wrap_sync_step(fn: Callable[..., Any], scope: StepScope) -> Callable[..., Any]:
    """``_wrap_sync`` for steps, with ``scope.open``/``complete`` inlined: this
    is the path every plain step call takes."""
    definition = scope.definition
    limits = scope.limits
    announce = scope.announce
    announce_end = scope.announce_end
    fail = scope.fail

    def step_call(*args: Any, **kwargs: Any) -> Any:
        parent = _get_frame() or active_frame()
        frame = _step_frame(definition, parent, limits)
        run = parent.run
        spans = run.spans
        spans.append(frame)  # Run.add_span, inlined
        if len(spans) > run.trim_at:
            run.trim()  # retention: see Run.trim
        if _spans.processors or registered_hooks:
            call = announce(frame, (args, kwargs))
            if call is not None:  # a PreStep hook rewrote the arguments
                args, kwargs = call
        token = _set_frame(frame)
        try:
            try:
                result = fn(*args, **kwargs)
            finally:
                _reset_frame(token)
        except BaseException as exc:
            error = fail(frame, exc)
            if error is None:
                return None
            if error is exc:
                raise
            raise error from exc
        frame.end_ns = time_ns()
        frame.status = "ok"
        frame.outcome = "completed"
        run.ended_steps.append(frame)  # Run.step_ended, inlined
        if _spans.processors or registered_hooks:
            result = announce_end(frame, result)  # a PostStep hook may rewrite it
        return result

    if _step_speedup is not None:
        _step_speedup.accelerate(step_call)  # calls run this body in C
    return step_call


def _wrap_sync(fn: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    open_scope = scope.open
    complete = scope.complete

    def scoped(*args: Any, **kwargs: Any) -> Any:
        frame = open_scope()
        token = _set_frame(frame)
        try:
            try:
                result = fn(*args, **kwargs)
            finally:
                # A plain call starts and ends in one context: the token is ours.
                _reset_frame(token)
        except BaseException as exc:
            error = scope.fail(frame, exc)
            if error is None:
                return None
            if error is exc:
                raise
            raise error from exc
        complete(frame)
        return result

    return scoped


def _wrap_async(fn: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    open_scope = scope.open
    aenter = scope.aenter

    async def scoped(*args: Any, **kwargs: Any) -> Any:
        # Without hooks nothing needs awaiting: take the synchronous path.
        if registered_hooks:
            frame, call = await aenter((args, kwargs))
            if call is not None:  # a PreStep hook rewrote the arguments
                args, kwargs = call
        else:
            frame = open_scope()
        token = _set_frame(frame)
        try:
            try:
                result = await fn(*args, **kwargs)
            finally:
                # A coroutine runs in its task's context throughout.
                _reset_frame(token)
        except BaseException as exc:
            error = await scope.afail(frame, exc)
            if error is None:
                return None
            if error is exc:
                raise
            raise error from exc
        if registered_hooks:
            return await scope.acomplete(frame, result)  # a PostStep hook may rewrite it
        scope.complete(frame)
        return result

    return scoped


def _wrap_gen(fn: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    # The frame is pushed for each resumption only, and set and reset within
    # it, so the token is always reset in the context that set it, whoever
    # drives or finalizes the generator.
    def scoped(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        inner = fn(*args, **kwargs)
        frame: Any = None
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            if frame is None:
                frame = scope.open()
            token = _context.set_frame(frame)
            try:
                try:
                    item = inner.send(to_send) if to_throw is None else inner.throw(to_throw)
                finally:
                    reset_token(token)
            except StopIteration as stop:
                scope.complete(frame)
                return stop.value
            except BaseException as exc:
                error = scope.fail(frame, exc)
                if error is None:
                    return None
                if error is exc:
                    raise
                raise error from exc
            try:
                to_send, to_throw = (yield item), None
            except GeneratorExit:
                # The consumer stopped early: close the body inside the scope; it
                # completed everything that was asked of it.
                token = _context.set_frame(frame)
                try:
                    inner.close()
                except BaseException as exc:
                    reset_token(token)
                    error = scope.fail(frame, exc)
                    if error is None:
                        return None  # the boundary swallowed it: close quietly
                    if error is exc:
                        raise
                    raise error from exc
                reset_token(token)
                scope.complete(frame)
                raise
            except BaseException as exc:
                to_throw = exc

    return scoped


def _wrap_async_gen(fn: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    async def scoped(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        inner = fn(*args, **kwargs)
        frame: Any = None
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            if frame is None:
                frame = await scope.aopen()
            token = _context.set_frame(frame)
            try:
                try:
                    if to_throw is None:
                        item = await inner.asend(to_send)
                    else:
                        item = await inner.athrow(to_throw)
                finally:
                    reset_token(token)
            except StopAsyncIteration:
                await scope.acomplete(frame)
                return
            except BaseException as exc:
                error = await scope.afail(frame, exc)
                if error is None:
                    return
                if error is exc:
                    raise
                raise error from exc
            try:
                to_send, to_throw = (yield item), None
            except GeneratorExit:
                token = _context.set_frame(frame)
                try:
                    await inner.aclose()
                except BaseException as exc:
                    reset_token(token)
                    error = await scope.afail(frame, exc)
                    if error is None:
                        return  # the boundary swallowed it: close quietly
                    if error is exc:
                        raise
                    raise error from exc
                reset_token(token)
                await scope.acomplete(frame)
                raise
            except BaseException as exc:
                to_throw = exc

    return scoped
