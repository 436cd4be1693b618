"""``steptrace portal``: serves the web viewer over the store (a smoke test
of the command; the viewer has its own tests), and refuses what it must."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from .conftest import ENTRY, Recorded, cli_env


def _get_json(url: str) -> Any:
    # The banner is printed as the server starts: retry until it accepts.
    deadline = time.monotonic() + 30  # a hang guard, not a timing assertion
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.load(response)
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_portal_serves_the_store_until_interrupted(recorded: Recorded) -> None:
    process = subprocess.Popen(
        [*ENTRY, "portal", "--port", "0"],
        cwd=recorded.workdir,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("steptrace portal on http://127.0.0.1:"), banner
        url = banner.split(" on ", 1)[1].split()[0]
        runs = _get_json(url + "api/runs")["runs"]
        assert [run["id"] for run in runs] == [recorded.run_id]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_portal_refuses_another_address_without_a_token(recorded: Recorded) -> None:
    done = recorded.cli("portal", "--host", "0.0.0.0")
    assert done.returncode == 1
    assert done.stderr.startswith("steptrace: error: refusing to serve the portal on 0.0.0.0")
