"""``override_provider``: one provider answers every call while it is active."""

from __future__ import annotations

import pytest

from steptrace import llm


def test_the_override_answers_even_calls_that_name_another_provider() -> None:
    pinned = llm.ScriptedProvider(["from the override"] * 3)
    other = llm.ScriptedProvider(["from the program"] * 3)
    llm.configure(provider=other, providers={"local": other})
    with llm.override_provider(pinned):
        answers = [
            llm.llm_call("a", model="gpt-4o", max_tokens=5).text,
            llm.llm_call("b", model="local:llama3", max_tokens=5).text,
            llm.llm_call("c", model="openai:gpt-4o", provider=other, max_tokens=5).text,
        ]
    after = llm.llm_call("d", model="gpt-4o", max_tokens=5).text
    assert answers == ["from the override"] * 3
    # The model as the normal resolution sends it: a provider prefix removed,
    # kept when the call passed a provider instance.
    assert [r.model for r in pinned.requests] == ["gpt-4o", "llama3", "openai:gpt-4o"]
    assert after == "from the program"


def test_overrides_do_not_nest_and_need_a_provider() -> None:
    with (
        llm.override_provider(llm.ScriptedProvider(["x"])),
        pytest.raises(RuntimeError, match="already active"),
        llm.override_provider(llm.ScriptedProvider(["y"])),
    ):
        pass
    with (
        pytest.raises(TypeError, match="expected a Provider"),
        llm.override_provider(
            "openai"  # type: ignore[arg-type]
        ),
    ):
        pass
    # The failed attempts left no override behind.
    with llm.override_provider(llm.ScriptedProvider(["z"])):
        pass
