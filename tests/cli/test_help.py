"""``--help`` everywhere, with examples; usage errors exit 2."""

from __future__ import annotations

import pytest

from .conftest import Cli

COMMANDS = ("run", "runs", "show", "export", "replay", "prices", "portal")


def test_the_top_level_help_lists_every_command_and_the_exit_codes(cli: Cli) -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in COMMANDS:
        assert f"\n    {command} " in done.stdout
    assert "exit codes:\n  0  success\n  1  an error" in done.stdout
    assert "2  a usage error" in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(cli: Cli, command: str) -> None:
    done = cli(command, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: steptrace {command} ")
    assert f"\nexamples:\n  steptrace {command}" in done.stdout
    assert "--store" in done.stdout


def test_usage_errors_exit_2(cli: Cli) -> None:
    assert cli().returncode == 2
    assert cli("frobnicate").returncode == 2
    assert cli("show").returncode == 2
    assert cli("export", "last", "--format", "csv").returncode == 2
    assert cli("--color", "sometimes", "runs").returncode == 2
