"""The test setup itself: skipped tests say why without ``-rs``, processes of
one test run (xdist workers) share one server of each kind, and freezing the
heap between tests still finalizes every leak."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ._garbage import collect_everything, collect_test_garbage, freeze_survivors
from ._services import MissingService, start_redis, stop_service, stop_shared_services

ROOT = Path(__file__).resolve().parents[1]


def test_a_skipped_test_says_why_in_the_summary(tmp_path: Path) -> None:
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\ndef test_skipped() -> None:\n    pytest.skip('needs the moon')\n"
    )
    ini = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *ini, "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "SKIPPED [1]" in done.stdout, done.stdout
    assert "needs the moon" in done.stdout


def _redis_or_skip() -> None:
    try:
        stop_service(start_redis())
    except MissingService as missing:
        if os.environ.get("STEPTRACE_REQUIRE_SERVICES") == "1":
            pytest.fail(str(missing))
        pytest.skip(str(missing))


def _listening(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
        return True
    return False


def test_processes_of_one_run_share_one_server_and_the_owner_stops_it(tmp_path: Path) -> None:
    _redis_or_skip()
    ask = (
        "import sys; from pathlib import Path; from tests._services import shared_service; "
        "print(shared_service('redis', Path(sys.argv[1])))"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", ask, str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    urls = {worker.communicate(timeout=60)[0].strip() for worker in workers}
    assert len(urls) == 1
    (url,) = urls
    assert url.startswith("redis://127.0.0.1:")
    assert _listening(url)
    stop_shared_services(tmp_path)
    assert not _listening(url)
    assert not tmp_path.exists()


def test_a_tests_leak_is_finalized_at_its_teardown_and_an_older_one_at_the_module_end() -> None:
    finalized: list[str] = []

    class Cycle:
        def __init__(self, name: str) -> None:
            self.name, self.me = name, self

        def __del__(self) -> None:
            finalized.append(self.name)

    older = Cycle("older")
    freeze_survivors()  # as after an earlier test
    del older  # garbage now, in a cycle of frozen objects
    Cycle("this test's")
    collect_test_garbage()
    assert finalized == ["this test's"]
    collect_everything()
    assert finalized == ["this test's", "older"]
