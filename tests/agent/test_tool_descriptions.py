"""``@tool`` says so when the model would see no description or an empty
schema: a warning naming the tool and the function, never a silent ``''``."""

from __future__ import annotations

from typing import Any

import pytest

from steptrace.agent import tool


def test_a_tool_without_a_docstring_warns_naming_the_function() -> None:
    with pytest.warns(UserWarning, match=r"^tool `bare` \(.*\.bare\): no description") as caught:

        @tool
        def bare(city: str) -> str:
            return city

    assert len(caught) == 1
    assert bare.description == ""  # it still works


def test_unannotated_parameters_warn_with_their_names() -> None:
    with pytest.warns(UserWarning, match=r"no type annotation on `value`, `other`") as caught:

        @tool
        def loose(value, other=3, typed: int = 1):  # type: ignore[no-untyped-def]
            """Documented, but loosely typed."""
            return value

    assert len(caught) == 1
    assert "no description" not in str(caught[0].message)
    assert loose.parameters["properties"]["value"] == {}


def test_both_missing_are_said_in_one_warning() -> None:
    with pytest.warns(UserWarning, match="^tool `anon`") as caught:
        tool(lambda x: x, name="anon")
    (warning,) = caught
    assert str(warning.message).startswith("tool `anon` (")
    assert "no description" in str(warning.message)
    assert "no type annotation on `x`" in str(warning.message)


@pytest.mark.filterwarnings("error")
def test_a_described_typed_tool_or_a_deliberate_choice_does_not_warn() -> None:
    @tool
    def documented(city: str) -> str:
        """Look a city up."""
        return city

    @tool(description="")
    def deliberately_blank(anything: Any) -> Any:
        return anything

    assert documented.description == "Look a city up."
    assert deliberately_blank.parameters["properties"]["anything"] == {}
