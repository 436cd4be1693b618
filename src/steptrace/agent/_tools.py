"""Tools for the agent loop: ``@tool`` turns a typed function into a ``Tool``.

This module owns everything about one tool and nothing about the loop: the
declared mutation class (``MutationClass``), the JSON Schema the model sees
(built with pydantic from the type hints, once, at decoration), validation and
coercion of the model's arguments against the signature, and running the tool
(async functions awaited, sync ones in a worker thread that carries the
caller's context) under its timeout, with the return value rendered as the text
the model reads. Policy, approval, hooks, events and error results belong to
the loop (``_loop.py``); a tool's own exceptions pass through unchanged.

pydantic is imported when the first tool is declared, never by
``import steptrace.agent``; without it ``@tool`` fails with an install hint.

Sync tools run in the tool threads (``configure_tool_threads``), daemon threads
of their own, never asyncio's default executor: at most
``DEFAULT_TOOL_WORKERS`` (32) at once. A sync tool that times out keeps running
in its thread until it returns (Python cannot stop a thread), but the loop
neither waits for it nor counts it as a worker, so hung tools cannot starve the
others, hold ``agent_loop`` or keep the process from exiting; past
``DEFAULT_ABANDONED_TOOLS`` (128) such threads still running, a sync tool fails
at once with an error the model reads. A sync tool declared with
``thread=False`` (one that never blocks: pure computation, a dict lookup) is
called in the loop's own thread instead, which spares the hop to a worker and
back; it cannot be stopped, so it takes no ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import enum
import functools
import inspect
import math
import re
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Generic, cast, get_args, get_origin, overload

from .. import _json
from ..errors import StepTraceError
from ..llm._threads import DaemonPool, PoolStats
from ..llm._types import ToolSpec

if TYPE_CHECKING:
    import pydantic
    from typing_extensions import ParamSpec, TypeVar

    # Defaults make a bare ``Tool`` mean ``Tool[..., Any]``, so annotations such
    # as ``Sequence[Tool]`` pass ``mypy --strict``.
    P = ParamSpec("P", default=...)
    R = TypeVar("R", default=Any)
else:
    from typing import ParamSpec, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = [
    "DEFAULT_ABANDONED_TOOLS",
    "DEFAULT_TOOL_WORKERS",
    "MutationClass",
    "Tool",
    "ToolTimeout",
    "configure_tool_threads",
    "tool",
    "tool_threads",
]

DEFAULT_TOOL_WORKERS = 32
"""Sync tools that may run at once (more wait for a thread, inside their timeout)."""

DEFAULT_ABANDONED_TOOLS = 128
"""Timed-out sync tools that may still be running before new ones are refused."""

_TOOL_THREADS = DaemonPool(
    "steptrace-tool", max_workers=DEFAULT_TOOL_WORKERS, max_abandoned=DEFAULT_ABANDONED_TOOLS
)


def configure_tool_threads(
    *, max_workers: int = DEFAULT_TOOL_WORKERS, max_abandoned: int = DEFAULT_ABANDONED_TOOLS
) -> None:
    """Size the threads sync tools run in (see the module docstring)."""
    _TOOL_THREADS.resize(max_workers=max_workers, max_abandoned=max_abandoned)


def tool_threads() -> PoolStats:
    """The tool threads' bounds and what they are doing now."""
    return _TOOL_THREADS.stats()


# What the OpenAI and Anthropic APIs accept as a tool name.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class MutationClass(enum.StrEnum):
    """What a tool may change: recorded on every ``ToolExecution`` event."""

    READ_ONLY = "read_only"
    WORKSPACE_WRITE = "workspace_write"
    DESTRUCTIVE = "destructive"
    NETWORK = "network"
    OTHER = "other"


class ToolTimeout(StepTraceError):
    """A tool ran longer than its ``timeout``; the loop reports it as an error
    result. ``tool`` names the tool and ``timeout_s`` gives the limit."""

    def __init__(self, tool: str, timeout_s: float) -> None:
        self.tool = tool
        self.timeout_s = timeout_s
        super().__init__(f"tool `{tool}` timed out after {timeout_s:g} s")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.tool, self.timeout_s))


@dataclass(frozen=True, slots=True)
class _Arguments:
    """The pydantic model checking one tool's arguments. Its fields are named
    ``p0``, ``p1``... with the parameter names as aliases, so parameters such as
    ``json``, ``schema`` or ``_private`` cannot clash with ``BaseModel``."""

    model: type[pydantic.BaseModel]
    fields: tuple[tuple[str, str], ...]  # (field name, parameter name)
    pass_always: frozenset[str]  # fields whose default is a pydantic Field()
    accepted: str  # the parameter names, for error messages

    def check(self, arguments: dict[str, Any]) -> pydantic.BaseModel:
        """``model.model_validate(arguments)``; straight through the model's
        validator once the model is complete (a model whose hints are still
        unresolved goes through ``model_validate``, which finishes it first)."""
        model = self.model
        if model.__pydantic_complete__:
            checked = model.__pydantic_validator__.validate_python(arguments)
            return cast("pydantic.BaseModel", checked)
        return model.model_validate(arguments)


@dataclass(frozen=True, eq=False)
class Tool(Generic[P, R]):
    """A function the model may call, with what the loop needs to offer, check
    and run it. Made by ``@tool``; calling it calls the function directly.

    Equality and hashing are by identity. Building one by hand is allowed: its
    arguments are then checked against ``fn``'s signature (built on first use),
    whatever ``parameters`` says.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    """The JSON Schema (an object) of the arguments, as the model sees it."""
    fn: Callable[P, R]
    is_async: bool
    classification: str = MutationClass.OTHER.value
    """A ``MutationClass`` value; ``other`` when undeclared."""
    timeout_s: float | None = None
    requires_approval: bool = False
    thread: bool = True
    """Sync tools only: run in a tool thread (True) or in the loop's own thread."""
    _arguments: _Arguments | None = field(default=None, init=False, repr=False)
    _spec: ToolSpec | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.description, str):
            raise TypeError(
                f"tool `{self.name}`: description must be a string, got {self.description!r}"
            )
        object.__setattr__(self, "classification", _check_classification(self))
        object.__setattr__(self, "timeout_s", _check_timeout(self.name, self.timeout_s))
        if not isinstance(self.requires_approval, bool):
            raise TypeError(
                f"tool `{self.name}`: requires_approval must be a bool, "
                f"got {self.requires_approval!r}"
            )
        if not isinstance(self.thread, bool):
            raise TypeError(f"tool `{self.name}`: thread must be a bool, got {self.thread!r}")
        if not self.thread and self.timeout_s is not None and not self.is_async:
            raise ValueError(
                f"tool `{self.name}`: a sync tool run in the loop's thread (thread=False) "
                "cannot be stopped at a timeout; drop the timeout or keep thread=True"
            )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def spec(self) -> ToolSpec:
        """The tool as offered to the model (built once: the same object every
        turn, so the pre-flight estimate measures its schema once)."""
        spec = self._spec
        if spec is None:
            spec = ToolSpec(
                name=self.name, description=self.description, parameters=self.parameters
            )
            object.__setattr__(self, "_spec", spec)
        return spec

    def validate(self, arguments: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
        """``(kwargs, [])`` with the arguments checked and coerced (``"3"`` for an
        ``int`` becomes ``3``), or ``(None, errors)``, each error a short
        ``field: message`` the model can act on. Unknown arguments are errors;
        omitted optional ones are left out so the function's defaults apply."""
        spec = self._arguments
        if spec is None:
            spec = _build_arguments(self.fn, self.name)
            object.__setattr__(self, "_arguments", spec)
        if type(arguments) is not dict:
            if not isinstance(arguments, Mapping):
                return None, [f"(root): arguments must be a JSON object, got {arguments!r}"]
            arguments = dict(arguments)
        try:
            checked = spec.check(arguments)  # reads the dict, never changes it
        except _validation_error() as exc:
            return None, [_describe(error, spec) for error in exc.errors()]
        given = checked.model_fields_set
        pass_always = spec.pass_always
        kwargs = {}
        for name, param in spec.fields:
            if name in given or name in pass_always:
                kwargs[param] = getattr(checked, name)
        return kwargs, []

    async def ainvoke(self, kwargs: dict[str, Any]) -> str:
        """Run the tool with validated ``kwargs`` and return its result as text.

        Raises ``ToolTimeout`` past ``timeout_s``; the tool's own exceptions
        propagate unchanged."""
        if self.timeout_s is None:
            fn: Callable[..., Any] = self.fn
            if self.is_async:  # the common case, without a frame in between
                value = await fn(**kwargs)
            elif self.thread:
                value = await self._in_thread(kwargs)
            else:  # never with a timeout (checked at declaration)
                # In a copy of the caller's context, as the threaded way runs it.
                value = contextvars.copy_context().run(fn, **kwargs)
                if type(value) is not str and inspect.isawaitable(value):
                    value = await value
        else:
            try:
                async with asyncio.timeout(self.timeout_s) as deadline:
                    value = await self._run(kwargs)
            except TimeoutError:
                if deadline.expired():  # else the tool raised it: pass it on
                    raise ToolTimeout(self.name, self.timeout_s) from None
                raise
        return value if type(value) is str else render(value)

    def _run(self, kwargs: dict[str, Any]) -> Awaitable[Any]:
        fn: Callable[..., Any] = self.fn
        if self.is_async:
            return cast("Awaitable[Any]", fn(**kwargs))  # awaited by ainvoke: no extra frame
        return self._in_thread(kwargs)

    async def _in_thread(self, kwargs: dict[str, Any]) -> Any:
        fn: Callable[..., Any] = self.fn
        # In a copy of the caller's context, as asyncio.to_thread would.
        context = contextvars.copy_context()
        value = await _TOOL_THREADS.run(functools.partial(context.run, fn, **kwargs))
        if type(value) is not str and inspect.isawaitable(value):  # a sync wrapper
            value = await value  # around a coroutine
        return value


def render(value: Any) -> str:
    """A tool's return value as the text the model reads: a string as is, None
    as empty, anything else as JSON (pydantic models and dataclasses dumped,
    unknown objects as ``str``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return _render_json(value)
    except (TypeError, ValueError):  # keys json cannot write, or a cycle
        return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, type):
        return str(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


# json.dumps(value, default=_jsonable, ensure_ascii=False), built once.
_render_json = _json.encoder(default=_jsonable, ensure_ascii=False)


@overload
def tool(
    fn: Callable[P, R],
    *,
    name: str | None = None,
    description: str | None = None,
    classification: str = "other",
    timeout: float | None = None,
    requires_approval: bool = False,
    thread: bool = True,
) -> Tool[P, R]: ...


@overload
def tool(
    fn: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    classification: str = "other",
    timeout: float | None = None,
    requires_approval: bool = False,
    thread: bool = True,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    classification: str = "other",
    timeout: float | None = None,
    requires_approval: bool = False,
    thread: bool = True,
) -> Any:
    """Declare a function (sync or async) as a tool, bare (``@tool``) or with
    arguments (``@tool(classification="read_only", timeout=10)``).

    ``name`` defaults to the function's name and ``description`` to the first
    paragraph of its docstring. The JSON Schema comes from the type hints;
    parameters without defaults are required. A parameter's description comes
    from ``Annotated[T, Field(description=...)]`` or a ``Field`` default, else
    ``Annotated[T, "text"]``, else the docstring's ``Args:`` section (Google
    style) or ``:param name:`` lines. ``classification`` is a ``MutationClass``
    value; ``timeout`` is in seconds. ``thread=False`` runs a sync tool in the
    loop's own thread instead of a tool thread: only for tools that never
    block, since nothing can stop them (no ``timeout`` then). Bad metadata
    raises ``ValueError`` or ``TypeError`` naming the tool.
    """

    def decorate(func: Callable[..., Any]) -> Tool:
        return _make_tool(
            func, name, description, classification, timeout, requires_approval, thread
        )

    if fn is None:
        return decorate
    return decorate(fn)


def _make_tool(
    fn: Callable[P, R],
    name: str | None,
    description: str | None,
    classification: str,
    timeout: float | None,
    requires_approval: bool,
    thread: bool,
) -> Tool[P, R]:
    if isinstance(fn, Tool):
        raise TypeError(f"tool `{fn.name}` is already a tool; apply @tool once")
    if not callable(fn):
        raise TypeError(f"@tool expects a function, got {fn!r} (pass the name as tool(name=...))")
    if name is None:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"@tool: {fn!r} has no __name__; pass tool(name=...)")
    _check_name(name)  # before the schema, which is slower and names the tool
    doc = fn.__doc__ if inspect.isfunction(fn) or inspect.ismethod(fn) else None
    summary, param_docs = _parse_docstring(doc)
    described = description is not None or bool(summary)
    if description is None:
        description = summary
    # type(fn).__call__: an object with an async __call__ is async too.
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
    arguments = _build_arguments(fn, name, param_docs)
    _warn_if_undescribed(fn, name, described)
    made = Tool(
        name=name,
        description=description,
        parameters=_json_schema(arguments, name),
        fn=fn,
        is_async=is_async,
        classification=classification,
        timeout_s=timeout,
        requires_approval=requires_approval,
        thread=thread,
    )
    object.__setattr__(made, "_arguments", arguments)
    return made


def _warn_if_undescribed(fn: Callable[..., Any], name: str, described: bool) -> None:
    """Warn (naming the function) when the model would see no description or an
    empty schema: it still works, but the model has to guess. An explicit
    ``description=""`` or an ``Any`` annotation says the author meant it."""
    missing = []
    if not described:
        missing.append("no description (add a docstring or pass tool(description=...))")
    unannotated = [
        f"`{p.name}`" for p in inspect.signature(fn).parameters.values() if p.annotation is p.empty
    ]
    if unannotated:
        missing.append(
            f"no type annotation on {', '.join(unannotated)} (the model sees an empty schema)"
        )
    if missing:
        qualname = getattr(fn, "__qualname__", name)
        warnings.warn(
            f"tool `{name}` ({qualname}): {'; '.join(missing)}", UserWarning, stacklevel=4
        )


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"tool name {name!r} must be 1 to 64 letters, digits, underscores or hyphens "
            "(pass tool(name=...))"
        )


def _check_classification(t: Tool[..., Any]) -> str:
    try:
        return MutationClass(t.classification).value
    except ValueError:
        valid = ", ".join(m.value for m in MutationClass)
        raise ValueError(
            f"tool `{t.name}`: classification must be one of {valid}; got {t.classification!r}"
        ) from None


def _check_timeout(name: str, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"tool `{name}`: timeout must be a number of seconds, got {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(
            f"tool `{name}`: timeout must be a positive number of seconds (None for no "
            f"timeout), got {timeout!r}"
        )
    return float(timeout)


def _pydantic() -> Any:
    """The pydantic module, with the submodules used here loaded."""
    try:
        import pydantic
        import pydantic.fields
        import pydantic.json_schema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("@tool needs pydantic: pip install 'steptrace[schema]'") from exc
    return pydantic


@functools.cache
def _validation_error() -> type[pydantic.ValidationError]:
    from pydantic import ValidationError

    return ValidationError


def _build_arguments(
    fn: Callable[..., Any], name: str, param_docs: Mapping[str, str] | None = None
) -> _Arguments:
    """The arguments model of ``fn``: one field per parameter, in order."""
    pydantic = _pydantic()
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, SyntaxError) as exc:
        raise TypeError(
            f"tool `{name}`: cannot resolve its type hints ({exc}); define the types it "
            "uses at module level"
        ) from exc
    except ValueError as exc:
        raise TypeError(f"tool `{name}`: cannot read its signature ({exc})") from exc
    definitions: dict[str, Any] = {}
    fields: list[tuple[str, str]] = []
    pass_always: set[str] = set()
    for index, param in enumerate(signature.parameters.values()):
        where = f"tool `{name}`: parameter `{param.name}`"
        if param.kind is param.VAR_POSITIONAL or param.kind is param.VAR_KEYWORD:
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise TypeError(
                f"tool `{name}`: {star}{param.name} is not supported; "
                "give every argument the model may pass a named parameter"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"{where} is positional-only; the model passes arguments by name")
        if param.name == "self":
            raise TypeError(
                f"{where} is not allowed: decorate a function, or pass a bound method "
                "(tool(obj.method))"
            )
        hint = Any if param.annotation is param.empty else param.annotation
        default = param.default
        if isinstance(default, pydantic.fields.FieldInfo):
            pass_always.add(f"p{index}")  # the function would see the FieldInfo itself
        elif default is param.empty:
            default = ...
        described = _explicit_description(hint, default, pydantic)
        text = _annotated_text(hint) or (param_docs or {}).get(param.name)
        extra = {} if described or not text else {"description": text}
        hint = cast(Any, Annotated)[hint, pydantic.Field(alias=param.name, **extra)]
        definitions[f"p{index}"] = (hint, default)
        fields.append((f"p{index}", param.name))
    try:
        model = pydantic.create_model(
            f"{name}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid"),
            **definitions,
        )
    except pydantic.PydanticUserError as exc:
        raise TypeError(f"tool `{name}`: cannot build a schema from its type hints: {exc}") from exc
    accepted = ", ".join(param for _, param in fields) or "no arguments"
    return _Arguments(model, tuple(fields), frozenset(pass_always), accepted)


def _explicit_description(hint: Any, default: Any, pydantic: Any) -> bool:
    metadata = get_args(hint)[1:] if get_origin(hint) is Annotated else ()
    return any(
        isinstance(item, pydantic.fields.FieldInfo) and item.description
        for item in (*metadata, default)
    )


def _annotated_text(hint: Any) -> str | None:
    if get_origin(hint) is Annotated:
        for item in get_args(hint)[1:]:
            if isinstance(item, str):
                return item
    return None


def _json_schema(arguments: _Arguments, name: str) -> dict[str, Any]:
    pydantic = _pydantic()
    try:
        schema: dict[str, Any] = arguments.model.model_json_schema(
            schema_generator=_schema_generator()
        )
    except pydantic.PydanticUserError as exc:  # e.g. a Callable parameter
        raise TypeError(
            f"tool `{name}`: cannot build a JSON Schema from its type hints: {exc}"
        ) from exc
    _drop_titles(schema)
    schema.setdefault("properties", {})
    return schema


@functools.cache
def _schema_generator() -> type[pydantic.json_schema.GenerateJsonSchema]:
    from pydantic.json_schema import GenerateJsonSchema

    class _ToolSchema(GenerateJsonSchema):
        # A default the schema cannot show (a sentinel object) is simply left
        # out: the parameter is optional either way.
        ignored_warning_kinds = {"skipped-choice", "non-serializable-default"}  # noqa: RUF012

    return _ToolSchema


# Keys whose values are data, not schemas: a "title" inside them is not a title.
_DATA_KEYS = frozenset({"default", "const", "enum", "examples"})


def _drop_titles(node: Any) -> None:
    """Remove pydantic's generated titles, which only cost the model tokens."""
    if isinstance(node, dict):
        if isinstance(node.get("title"), str):
            del node["title"]
        for key, value in node.items():
            if key not in _DATA_KEYS:
                _drop_titles(value)
    elif isinstance(node, list):
        for item in node:
            _drop_titles(item)


def _describe(error: Any, arguments: _Arguments) -> str:
    """One pydantic error as ``field: message``."""
    loc = error["loc"]
    where = ".".join(str(part) for part in loc) or "(root)"
    kind = error["type"]
    if kind == "missing":
        return f"{where}: missing required {'argument' if len(loc) == 1 else 'field'}"
    if kind == "extra_forbidden" and len(loc) == 1:
        return f"{where}: unexpected argument (this tool takes: {arguments.accepted})"
    return f"{where}: {error['msg']}"


_SECTION = re.compile(r"^(?:Args|Arguments|Parameters|Params|Keyword Args):\s*$")
_GOOGLE_ITEM = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_ITEM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The first paragraph (lines joined by spaces) and the parameter
    descriptions of a Google-style ``Args:`` section or ``:param x:`` lines."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line) or line.startswith(":"):
            break
        summary.append(line.strip())
    params: dict[str, str] = {}
    current: str | None = None
    in_section = False
    item_indent: int | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        sphinx = _SPHINX_ITEM.match(line)
        if sphinx:
            current, in_section = sphinx[1], False
            params[current] = sphinx[2].strip()
        elif _SECTION.match(line):
            current, in_section, item_indent = None, True, None
        elif not stripped:
            continue
        elif indent == 0:
            current, in_section = None, False
        elif in_section and (item_indent is None or indent <= item_indent):
            google = _GOOGLE_ITEM.match(stripped)
            current, item_indent = (google[1], indent) if google else (None, item_indent)
            if google:
                params[google[1]] = google[2].strip()
        elif current is not None:  # a continuation line
            params[current] = f"{params[current]} {stripped}".strip()
    return " ".join(summary), {k: v for k, v in params.items() if v}
