"""``@tool``: the schema the model sees, argument validation, invocation under a
timeout, the rendering of results, and the decorator's metadata checks."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import pickle
import subprocess
import sys
import threading
from typing import Annotated, Any, Literal, Optional

import pydantic
import pytest
from pydantic import BaseModel, Field

import steptrace
from steptrace.agent import MutationClass, Tool, ToolTimeout, tool
from steptrace.errors import StepTraceError
from steptrace.llm import ToolSpec

# Most tools here are throwaway and undocumented on purpose; the warning that
# says so is tested in test_tool_descriptions.py.
pytestmark = pytest.mark.filterwarnings("ignore:tool `[^`]*` [(][^)]*[)]. no description")


class Address(BaseModel):
    city: str
    zip_code: int = 0


class Order(BaseModel):
    item: str
    quantity: int
    ship_to: Address


@dataclasses.dataclass
class Point:
    x: int
    y: int


_UNSET: Any = object()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# --- schema ---------------------------------------------------------------------------


def test_scalar_hints_give_a_closed_object_schema_without_titles() -> None:
    @tool
    def scalars(count: int, label: str, ratio: float, flag: bool) -> None:
        """Scalars."""

    assert scalars.parameters == {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "label": {"type": "string"},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
        },
        "required": ["count", "label", "ratio", "flag"],
        "additionalProperties": False,
    }


def test_containers_optionals_literals_and_defaults() -> None:
    @tool
    def mixed(
        tags: list[str],
        maybe: Optional[int],  # noqa: UP045 - the spelling under test
        mode: Literal["fast", "slow"] = "fast",
        limit: int | None = None,
        scale: float = 1.5,
    ) -> None:
        pass

    properties = mixed.parameters["properties"]
    assert properties["tags"] == {"type": "array", "items": {"type": "string"}}
    assert properties["maybe"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert properties["mode"] == {"type": "string", "enum": ["fast", "slow"], "default": "fast"}
    assert properties["limit"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "default": None,
    }
    assert properties["scale"] == {"type": "number", "default": 1.5}
    # Optional without a default is still required: the model must say null.
    assert mixed.parameters["required"] == ["tags", "maybe"]


def test_a_nested_pydantic_model_goes_into_defs() -> None:
    @tool
    def place(order: Order, notes: list[Address] | None = None) -> None:
        pass

    schema = place.parameters
    assert schema["properties"]["order"] == {"$ref": "#/$defs/Order"}
    assert schema["$defs"]["Order"] == {
        "type": "object",
        "properties": {
            "item": {"type": "string"},
            "quantity": {"type": "integer"},
            "ship_to": {"$ref": "#/$defs/Address"},
        },
        "required": ["item", "quantity", "ship_to"],
    }
    assert schema["$defs"]["Address"]["required"] == ["city"]
    assert schema["required"] == ["order"]


def test_no_parameters_and_unannotated_parameters() -> None:
    @tool
    def nothing() -> str:
        return "x"

    @tool
    def loose(value, other=3):  # type: ignore[no-untyped-def]
        return value

    assert nothing.parameters == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert loose.parameters["properties"] == {"value": {}, "other": {"default": 3}}
    assert loose.parameters["required"] == ["value"]


def test_parameter_names_that_clash_with_basemodel_attributes_work() -> None:
    @tool
    def clash(json: str, schema: int, model_config: bool, _private: str = "p") -> str:
        return f"{json}{schema}{model_config}{_private}"

    assert list(clash.parameters["properties"]) == ["json", "schema", "model_config", "_private"]
    kwargs, errors = clash.validate({"json": "j", "schema": "2", "model_config": True})
    assert errors == []
    assert kwargs == {"json": "j", "schema": 2, "model_config": True}
    assert run(clash.ainvoke(kwargs or {})) == "j2Truep"


def test_parameter_descriptions_from_annotated_field_and_docstring() -> None:
    @tool
    def described(
        path: Annotated[str, "file to read"],
        encoding: Annotated[str, Field(description="text encoding")] = "utf-8",
        limit: int = Field(default=10, description="most lines"),
        start: int = 0,
        verbose: bool = False,
    ) -> None:
        """Read part of a file.

        Longer explanation that the model does not need.

        Args:
            path: overridden by the Annotated text.
            start (int): first line,
                counted from zero.
            verbose: say more.

        Returns:
            Nothing.
        """

    assert described.description == "Read part of a file."
    properties = described.parameters["properties"]
    assert properties["path"] == {"type": "string", "description": "file to read"}
    assert properties["encoding"]["description"] == "text encoding"
    assert properties["limit"] == {"type": "integer", "default": 10, "description": "most lines"}
    assert properties["start"]["description"] == "first line, counted from zero."
    assert properties["verbose"]["description"] == "say more."


def test_sphinx_param_lines_describe_parameters() -> None:
    @tool
    def sphinx(query: str, top: int = 3) -> None:
        """Search the index.

        :param query: words to look for
        :param int top: how many hits
        """

    assert sphinx.description == "Search the index."
    properties = sphinx.parameters["properties"]
    assert properties["query"]["description"] == "words to look for"
    assert properties["top"]["description"] == "how many hits"


def test_name_and_description_defaults_and_overrides() -> None:
    @tool
    def first_paragraph() -> None:
        """Look something up
        across two lines.

        Second paragraph."""

    @tool
    def undocumented() -> None:
        pass

    @tool(name="renamed", description="Custom text.")
    def original() -> None:
        """Ignored."""

    assert first_paragraph.name == "first_paragraph"
    assert first_paragraph.description == "Look something up across two lines."
    assert undocumented.description == ""
    assert (original.name, original.description) == ("renamed", "Custom text.")


def test_spec_is_what_the_provider_sees() -> None:
    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return key

    spec = lookup.spec()
    assert isinstance(spec, ToolSpec)
    assert (spec.name, spec.description) == ("lookup", "Look a key up.")
    assert spec.parameters == lookup.parameters


# --- validation -------------------------------------------------------------------------


@tool
def order_tool(order: Order, count: int, note: str = _UNSET, ratio: float = 1.0) -> str:
    """Place an order."""
    return "unset" if note is _UNSET else note


def test_valid_arguments_are_coerced() -> None:
    kwargs, errors = order_tool.validate(
        {"order": {"item": "pen", "quantity": "2", "ship_to": {"city": "Oslo"}}, "count": "3"}
    )
    assert errors == []
    assert kwargs is not None
    assert kwargs["count"] == 3
    assert kwargs["order"] == Order(item="pen", quantity=2, ship_to=Address(city="Oslo"))
    assert isinstance(kwargs["order"], Order)  # a model, not a dict
    # Omitted optional arguments stay out, so the function's own defaults apply.
    assert set(kwargs) == {"order", "count"}
    assert run(order_tool.ainvoke(kwargs)) == "unset"


def test_missing_wrong_type_and_extra_arguments_are_reported_per_field() -> None:
    kwargs, errors = order_tool.validate({"count": "many", "colour": "red"})
    assert kwargs is None
    assert errors == [
        "order: missing required argument",
        "count: Input should be a valid integer, unable to parse string as an integer",
        "colour: unexpected argument (this tool takes: order, count, note, ratio)",
    ]


def test_nested_errors_name_the_path() -> None:
    _, errors = order_tool.validate(
        {"order": {"item": "pen", "quantity": 1, "ship_to": {"zip_code": "x"}}, "count": 1}
    )
    assert errors == [
        "order.ship_to.city: missing required field",
        "order.ship_to.zip_code: Input should be a valid integer, "
        "unable to parse string as an integer",
    ]


def test_extra_arguments_to_a_tool_without_parameters() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert ping.validate({}) == ({}, [])
    assert ping.validate({"x": 1}) == (
        None,
        ["x: unexpected argument (this tool takes: no arguments)"],
    )


def test_arguments_that_are_not_an_object_are_an_error() -> None:
    kwargs, errors = order_tool.validate(["not", "a", "dict"])  # type: ignore[arg-type]
    assert kwargs is None
    assert errors[0].startswith("(root): arguments must be a JSON object")


def test_a_field_default_is_passed_explicitly() -> None:
    # The function itself would otherwise receive the FieldInfo object.
    @tool
    def sized(size: int = Field(default=4, description="size")) -> int:
        return size

    assert sized.validate({}) == ({"size": 4}, [])


def test_a_tool_built_by_hand_validates_against_its_function() -> None:
    def add(a: int, b: int = 1) -> int:
        return a + b

    made = Tool(name="add", description="", parameters={}, fn=add, is_async=False)
    assert made.validate({"a": "2"}) == ({"a": 2}, [])
    assert made.validate({"b": 2})[1] == ["a: missing required argument"]


# --- invocation -------------------------------------------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_a_sync_tool_runs_in_a_worker_thread_with_the_callers_context() -> None:
    seen: dict[str, Any] = {}

    @tool
    def where() -> str:
        seen["thread"] = threading.get_ident()
        return request_id.get()

    async def main() -> str:
        request_id.set("req-7")
        return await where.ainvoke({})

    assert run(main()) == "req-7"
    assert seen["thread"] != threading.get_ident()


def test_an_async_tool_is_awaited_on_the_loop() -> None:
    seen: dict[str, Any] = {}

    @tool
    async def double(n: int) -> int:
        seen["thread"] = threading.get_ident()
        await asyncio.sleep(0)
        return n * 2

    assert double.is_async
    assert run(double.ainvoke({"n": 21})) == "42"
    assert seen["thread"] == threading.get_ident()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain text", "plain text"),
        ("", ""),
        (None, ""),
        (3, "3"),
        (True, "true"),
        ([1, "a", None], '[1, "a", null]'),
        ({"k": [1.5]}, '{"k": [1.5]}'),
        ("naïve", "naïve"),
        ({"word": "naïve"}, '{"word": "naïve"}'),
        (Address(city="Oslo"), '{"city": "Oslo", "zip_code": 0}'),
        ([Address(city="Rome", zip_code=1)], '[{"city": "Rome", "zip_code": 1}]'),
        (Point(1, 2), '{"x": 1, "y": 2}'),
        ({3, 1, 2}, "[1, 2, 3]"),
        ({"when": b"bytes"}, '{"when": "bytes"}'),
        ({"path": steptrace}, '{"path": "' + str(steptrace).replace("\\", "\\\\") + '"}'),
        ({(1, 2): "tuple key"}, "{(1, 2): 'tuple key'}"),
    ],
)
def test_return_values_are_rendered_as_text(value: Any, text: str) -> None:
    @tool
    def give() -> Any:
        return value

    @tool
    async def agive() -> Any:
        return value

    assert run(give.ainvoke({})) == text
    assert run(agive.ainvoke({})) == text


def test_exceptions_from_the_tool_propagate_unchanged() -> None:
    boom = FileNotFoundError("missing.txt")

    @tool
    def sync_fails() -> None:
        raise boom

    @tool(timeout=5)
    async def async_fails() -> None:
        raise boom

    for failing in (sync_fails, async_fails):
        with pytest.raises(FileNotFoundError) as caught:
            run(failing.ainvoke({}))
        assert caught.value is boom


def test_a_timeout_error_raised_by_the_tool_itself_is_not_a_tool_timeout() -> None:
    @tool(timeout=5)
    async def upstream_timeout() -> None:
        raise TimeoutError("upstream API timed out")

    with pytest.raises(TimeoutError, match="upstream API") as caught:
        run(upstream_timeout.ainvoke({}))
    assert not isinstance(caught.value, ToolTimeout)


def test_an_async_tool_past_its_timeout_is_cancelled() -> None:
    cancelled = []

    @tool(timeout=0.05)
    async def hangs() -> str:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "too late"

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ToolTimeout) as caught:
            await hangs.ainvoke({})
        assert str(caught.value) == "tool `hangs` timed out after 0.05 s"
        assert (caught.value.tool, caught.value.timeout_s) == ("hangs", 0.05)
        return loop.time() - started

    assert run(main()) < 0.5
    assert cancelled == [True]


def test_a_sync_tool_past_its_timeout_keeps_running_in_its_thread() -> None:
    # Python cannot stop a thread: the caller gets ToolTimeout at once, and the
    # function runs on until it returns; its result is dropped.
    release = threading.Event()
    finished = threading.Event()

    @tool(timeout=0.05)
    def blocks() -> str:
        release.wait(2)
        finished.set()
        return "too late"

    async def main() -> None:
        with pytest.raises(ToolTimeout, match=r"tool `blocks` timed out after 0\.05 s"):
            await blocks.ainvoke({})
        assert not finished.is_set()  # still running
        release.set()

    run(main())  # asyncio.run does not wait for the tool's thread...
    assert finished.wait(2)  # ...which runs on, released, to its end


def test_a_tool_within_its_timeout_returns_normally() -> None:
    @tool(timeout=2)
    async def quick() -> str:
        await asyncio.sleep(0)
        return "in time"

    @tool(timeout=2)
    def quick_sync() -> str:
        return "in time too"

    assert run(quick.ainvoke({})) == "in time"
    assert run(quick_sync.ainvoke({})) == "in time too"


def test_tool_timeout_is_a_steptrace_error_and_pickles() -> None:
    error = ToolTimeout("slow", 1.5)
    assert isinstance(error, StepTraceError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.tool, copy.timeout_s, str(copy)) == (
        ToolTimeout,
        "slow",
        1.5,
        "tool `slow` timed out after 1.5 s",
    )


def test_a_decorated_function_stays_directly_callable() -> None:
    @tool
    def add(a: int, b: int = 1) -> int:
        return a + b

    @tool(classification="read_only")
    async def aadd(a: int, b: int) -> int:
        return a + b

    total: int = add(2, b=3)  # typed: Tool[[a: int, b: int], int]
    assert total == 5
    assert run(aadd(1, 2)) == 3
    assert add.fn(1) == 2


def test_a_step_decorated_function_can_be_a_tool() -> None:
    @tool(classification="read_only")
    @steptrace.step(name="lookup_step")
    async def lookup(key: str, exact: bool = True) -> str:
        """Look a key up inside a step."""
        return f"{key}:{exact}"

    assert lookup.is_async
    assert lookup.description == "Look a key up inside a step."
    assert lookup.parameters["required"] == ["key"]
    assert run(lookup.ainvoke({"key": "k"})) == "k:True"
    assert [r.name for r in steptrace.current_run().completed_steps] == ["lookup_step"]


def test_a_callable_object_and_a_bound_method_can_be_tools() -> None:
    class Fetcher:
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        async def __call__(self, url: str) -> str:
            return self.prefix + url

        def size(self, url: str) -> int:
            """Size of a page."""
            return len(self.prefix + url)

    fetch = tool(Fetcher("got "), name="fetch")
    size = tool(Fetcher("ab").size)
    assert fetch.is_async
    assert run(fetch.ainvoke({"url": "u"})) == "got u"
    assert (size.name, size.description, size.is_async) == ("size", "Size of a page.", False)
    assert list(size.parameters["properties"]) == ["url"]
    assert run(size.ainvoke({"url": "xyz"})) == "5"


# --- metadata -----------------------------------------------------------------------------


def test_classification_approval_and_timeout_fields() -> None:
    @tool
    def plain() -> None:
        pass

    @tool(classification=MutationClass.DESTRUCTIVE, requires_approval=True, timeout=3)
    def dangerous() -> None:
        pass

    assert (plain.classification, plain.requires_approval, plain.timeout_s) == (
        "other",
        False,
        None,
    )
    assert plain.is_async is False
    assert (dangerous.classification, dangerous.requires_approval) == ("destructive", True)
    assert type(dangerous.classification) is str
    assert dangerous.timeout_s == 3.0
    assert isinstance(dangerous.timeout_s, float)


@pytest.mark.parametrize("value", [m.value for m in MutationClass])
def test_every_mutation_class_is_accepted(value: str) -> None:
    @tool(classification=value)
    def declared() -> None:
        pass

    assert declared.classification == value


def test_mutation_class_values() -> None:
    assert [m.value for m in MutationClass] == [
        "read_only",
        "workspace_write",
        "destructive",
        "network",
        "other",
    ]
    assert MutationClass("network") == "network"


def test_an_unknown_classification_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="classification") as caught:

        @tool(classification="readonly")
        def misdeclared() -> None:
            pass

    assert str(caught.value) == (
        "tool `misdeclared`: classification must be one of read_only, workspace_write, "
        "destructive, network, other; got 'readonly'"
    )


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan")])
def test_a_timeout_must_be_positive_and_finite(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"tool `timed`: timeout must be a positive number"):
        tool(lambda: None, name="timed", timeout=timeout)


@pytest.mark.parametrize("timeout", ["1", True])
def test_a_timeout_must_be_a_number(timeout: Any) -> None:
    with pytest.raises(TypeError, match=r"tool `timed`: timeout must be a number"):
        tool(lambda: None, name="timed", timeout=timeout)


def test_requires_approval_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match=r"tool `gated`: requires_approval must be a bool"):
        tool(lambda: None, name="gated", requires_approval="yes")  # type: ignore[call-overload]


def test_star_args_and_star_kwargs_are_rejected_naming_the_tool() -> None:
    def variadic(*paths: str) -> None:
        pass

    def keywords(**options: Any) -> None:
        pass

    with pytest.raises(TypeError, match=r"tool `variadic`: \*paths is not supported"):
        tool(variadic)
    with pytest.raises(TypeError, match=r"tool `keywords`: \*\*options is not supported"):
        tool(keywords)


def test_self_and_positional_only_parameters_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"tool `method`: parameter `self` is not allowed"):

        class Holder:
            @tool
            def method(self, x: int) -> None:
                pass

    def positional(x: int, /) -> None:
        pass

    with pytest.raises(TypeError, match=r"tool `positional`: parameter `x` is positional-only"):
        tool(positional)


def test_names_must_suit_the_provider_apis() -> None:
    with pytest.raises(ValueError, match=r"tool name '<lambda>' must be 1 to 64"):
        tool(lambda: None)
    with pytest.raises(ValueError, match=r"tool name 'two words'"):
        tool(lambda: None, name="two words")
    assert tool(lambda: None, name="x-1_Y").name == "x-1_Y"
    # ``$`` alone would match before a final newline: the API would refuse the name.
    with pytest.raises(ValueError, match=r"tool name 'search\\n'"):
        tool(lambda: None, name="search\n")


def test_misuse_of_the_decorator_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"@tool expects a function, got 'search'"):
        tool("search")  # type: ignore[call-overload]

    @tool
    def once() -> None:
        pass

    with pytest.raises(TypeError, match=r"tool `once` is already a tool"):
        tool(once)


def test_unresolvable_or_unschemable_hints_name_the_tool() -> None:
    class Local(BaseModel):  # the string annotation below cannot see it
        x: int

    def takes_local(thing: Local) -> None:
        pass

    with pytest.raises(
        TypeError, match=r"tool `takes_local`: cannot resolve its type hints .*'Local'"
    ):
        tool(takes_local)

    class Opaque:
        pass

    def takes_opaque(thing: Opaque) -> None:
        pass

    globals()["Opaque"] = Opaque  # resolvable, but pydantic has no schema for it
    try:
        with pytest.raises(TypeError, match=r"tool `takes_opaque`: cannot build a schema"):
            tool(takes_opaque)
    finally:
        del globals()["Opaque"]


def test_tools_are_hashable_and_compare_by_identity() -> None:
    @tool
    def a() -> None:
        pass

    twin = tool(a.fn)
    assert {a: 1}[a] == 1
    assert a != twin
    assert pydantic.VERSION  # the schema is pydantic's; the import is the extra's


def test_a_sync_wrapper_returning_a_coroutine_is_awaited() -> None:
    async def fetch(url: str) -> str:
        return f"fetched {url}"

    def unaware_wrapper(url: str) -> Any:  # a decorator that knows nothing of async
        return fetch(url)

    wrapped = tool(unaware_wrapper, name="fetch")
    assert not wrapped.is_async
    assert run(wrapped.ainvoke({"url": "u"})) == "fetched u"


def test_importing_the_agent_package_does_not_import_pydantic() -> None:
    # A fresh interpreter: pydantic loads at the first @tool, and the submodules
    # @tool needs are loaded by steptrace itself, not by whoever imported first.
    script = (
        "import sys\n"
        "import steptrace.agent\n"
        "assert 'pydantic' not in sys.modules, 'imported at import time'\n"
        "@steptrace.agent.tool\n"
        "def f(x: int = 1) -> int:\n"
        "    return x\n"
        "print(f.parameters['properties'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'x': {'default': 1, 'type': 'integer'}}"


# --- thread=False: sync tools in the loop's own thread ---------------------------------


def test_a_sync_tool_with_thread_false_runs_in_the_callers_thread_in_a_copied_context() -> None:
    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")
    threads: list[int] = []

    @tool(thread=False)
    def here(n: int) -> str:
        threads.append(threading.get_ident())
        seen.set("changed by the tool")
        return f"{n} {seen.get()}"

    @tool
    def there() -> int:
        threads.append(threading.get_ident())
        return 1

    async def main() -> tuple[str, str]:
        text = await here.ainvoke({"n": 2})
        await there.ainvoke({})
        return text, seen.get()

    assert run(main()) == ("2 changed by the tool", "unset")  # the change stays in the tool
    assert threads[0] == threading.get_ident()
    assert threads[1] != threading.get_ident()
    assert here.thread is False
    assert there.thread is True


def test_a_sync_tool_with_thread_false_returning_a_coroutine_is_awaited() -> None:
    async def later() -> dict[str, int]:
        return {"n": 1}

    @tool(thread=False)
    def wraps() -> Any:
        return later()

    assert run(wraps.ainvoke({})) == '{"n": 1}'


def test_thread_false_takes_no_timeout_and_must_be_a_bool() -> None:
    def plain() -> str:
        return ""

    with pytest.raises(ValueError, match=r"tool `plain`: .*thread=False.* cannot be stopped"):
        tool(plain, thread=False, timeout=1)
    with pytest.raises(TypeError, match="thread must be a bool"):
        tool(plain, thread=1)  # type: ignore[call-overload]

    async def async_plain() -> str:
        return ""

    assert tool(async_plain, thread=False, timeout=1).timeout_s == 1.0  # async: no thread anyway
