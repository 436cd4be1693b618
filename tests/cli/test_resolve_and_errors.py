"""RUN resolution and the errors a person can act on: unknown ids with near
matches, ambiguous prefixes, a missing store (never created just to read)."""

from __future__ import annotations

from pathlib import Path

from .conftest import PIPELINE, Cli, read_runs


def _two_runs(cli: Cli, tmp_path: Path) -> list[str]:
    assert cli("run", "-q", str(PIPELINE)).returncode == 0
    assert cli("run", "-q", "--name", "second", str(PIPELINE)).returncode == 0
    return [run.id for run in read_runs(tmp_path / ".steptrace" / "runs.db")]


def _shown(cli: Cli, query: str) -> str:
    done = cli("show", query, "--json")
    assert done.returncode == 0, done.stderr
    return str(done.stdout.split('"id": "')[1].split('"')[0])


def test_run_is_an_id_a_unique_prefix_last_or_a_name(cli: Cli, tmp_path: Path) -> None:
    first, second = _two_runs(cli, tmp_path)
    assert _shown(cli, first) == first
    assert _shown(cli, "last") == second
    assert _shown(cli, "latest") == second
    assert _shown(cli, "pipeline") == first
    assert _shown(cli, "second") == second
    # The random tail makes the full id unique; all but its last character is
    # a prefix of exactly one run.
    assert _shown(cli, first[:-1]) == first


def test_an_ambiguous_prefix_lists_the_candidates(cli: Cli, tmp_path: Path) -> None:
    first, second = _two_runs(cli, tmp_path)
    done = cli("show", "2")
    assert done.returncode == 1
    assert "run id prefix '2' is ambiguous: it matches" in done.stderr
    assert f"  {second}\n  {first}\n" in done.stderr
    assert "Give more of the id." in done.stderr


def test_an_unknown_run_says_so_and_lists_near_matches(cli: Cli, tmp_path: Path) -> None:
    first, _ = _two_runs(cli, tmp_path)
    typo = first[:-1] + ("0" if first[-1] != "0" else "1")
    for command in (["show", typo], ["export", typo], ["replay", typo, str(PIPELINE)]):
        done = cli(*command)
        assert done.returncode == 1, command
        assert f"steptrace: error: no run '{typo}' in the store" in done.stderr
        assert f"Did you mean:\n  {first}  pipeline  completed" in done.stderr
    by_name = cli("show", "pipelin")
    assert "  pipeline  (run name: its latest run)" in by_name.stderr


def test_a_missing_store_says_where_it_looked_and_is_not_created(cli: Cli, tmp_path: Path) -> None:
    done = cli("runs")
    assert done.returncode == 1
    default = tmp_path / ".steptrace" / "runs.db"
    assert (
        f"steptrace: error: no run store at {default} (the default: .steptrace/runs.db under "
        "the working directory; it does not exist)." in done.stderr
    )
    assert "steptrace run SCRIPT.py" in done.stderr
    assert cli("show", "last", "--store", "elsewhere.db").stderr.startswith(
        f"steptrace: error: no run store at {tmp_path / 'elsewhere.db'} (from --store;"
    )
    from_env = cli("export", "last", env={"STEPTRACE_STORE": "env.db"})
    assert f"no run store at {tmp_path / 'env.db'} (from $STEPTRACE_STORE;" in from_env.stderr
    assert cli("portal").returncode == 1
    assert list(tmp_path.iterdir()) == []


def test_an_empty_store_has_no_last_run(cli: Cli, tmp_path: Path) -> None:
    from steptrace.store import SQLiteStore

    SQLiteStore(tmp_path / "empty.db").close()
    done = cli("show", "last", "--store", "empty.db")
    assert done.returncode == 1
    assert "the store holds no runs yet" in done.stderr
    assert cli("runs", "--store", "empty.db").stdout == "no runs stored yet\n"


def test_a_file_that_is_not_a_store_is_an_error_not_a_traceback(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database, just words\n" * 50)
    done = cli("runs", "--store", "notes.txt")
    assert done.returncode == 1
    assert done.stderr.startswith("steptrace: error: cannot open the store at notes.txt")
    assert "Traceback" not in done.stderr
