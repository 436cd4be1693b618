"""A real Arize Phoenix server for the opt-in integration tests.

Phoenix runs from its own venv (``scripts/phoenix.sh``; ``$STEPTRACE_PHOENIX_VENV``
overrides where), as a child process started through ``phoenix_server.py``
so that everything it opens listens on 127.0.0.1, with its data in a temp
directory. One server per test session: starting it takes tens of seconds.
``PhoenixServer`` also reads spans back through Phoenix's REST API.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WRAPPER = Path(__file__).resolve().with_name("phoenix_server.py")
OPT_IN = "STEPTRACE_PHOENIX"
HOW_TO_RUN = (
    "Phoenix integration tests are opt-in: run `scripts/phoenix.sh` then "
    "`STEPTRACE_PHOENIX=1 scripts/test.sh tests/integration`"
)
STARTUP_TIMEOUT_S = 180.0
"""Phoenix is ready in 10-20 s on a quiet 2-core machine; this only bounds a hang."""
READ_TIMEOUT_S = 60.0
"""Phoenix stores received spans asynchronously; how long to poll for them."""


def phoenix_opted_in() -> bool:
    return os.environ.get(OPT_IN) == "1"


def phoenix_python() -> Path:
    venv = Path(os.environ.get("STEPTRACE_PHOENIX_VENV", REPO / ".cache" / "phoenix-venv"))
    return venv / "bin" / "python"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PhoenixServer:
    """One Phoenix process on 127.0.0.1, its HTTP API and OTLP/HTTP receiver."""

    def __init__(self, working_dir: Path) -> None:
        self.working_dir = working_dir
        self.port = free_port()
        self.grpc_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.traces_url = f"{self.base_url}/v1/traces"
        self.log_path = working_dir / "phoenix.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        """Seconds from launch until ``/healthz`` answered."""

    def start(self) -> None:
        python = phoenix_python()
        if not python.exists():
            pytest.fail(
                f"{OPT_IN}=1 but Phoenix is not installed at {python}: run scripts/phoenix.sh"
            )
        data = self.working_dir / "data"
        launched = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(python),
                    str(WRAPPER),
                    "--working-dir",
                    str(data),
                    "--port",
                    str(self.port),
                    "--grpc-port",
                    str(self.grpc_port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.working_dir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = launched + STARTUP_TIMEOUT_S
        while not self._healthy():
            if self.process.poll() is not None:
                pytest.fail(f"Phoenix exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"Phoenix not ready in {STARTUP_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
            time.sleep(0.25)
        self.startup_s = time.monotonic() - launched

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def listening_addresses(self) -> list[str]:
        """The addresses Phoenix's process listens on (TCP and UDP, from
        ``/proc``), e.g. ``127.0.0.1:4317``."""
        assert self.process is not None
        pid = self.process.pid
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
        found: list[str] = []
        for table in ("tcp", "tcp6", "udp", "udp6"):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                listening = state == "0A" if table.startswith("tcp") else state == "07"
                if inode in inodes and listening:
                    found.append(_proc_address(local))
        return found

    # -- reading back -------------------------------------------------------------

    def get_json(self, path: str, **query: str) -> Any:
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span Phoenix holds for ``project`` (all pages); ``[]`` while
        the project does not exist yet."""
        spans: list[dict[str, Any]] = []
        cursor: str | None = None
        path = f"/v1/projects/{urllib.parse.quote(project, safe='')}/spans"
        while True:
            query = {"limit": "1000"} if cursor is None else {"limit": "1000", "cursor": cursor}
            try:
                page = self.get_json(path, **query)
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    error.close()
                    return []
                raise
            spans.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return spans

    def wait_for_spans(self, project: str, count: int) -> list[dict[str, Any]]:
        """Poll until ``project`` holds at least ``count`` spans (bounded wait)."""
        deadline = time.monotonic() + READ_TIMEOUT_S
        while True:
            spans = self.spans(project)
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.2)


def _proc_address(local: str) -> str:
    """``/proc/net/tcp*``'s ``HEX:PORT`` as ``address:port`` (IPv4-mapped IPv6
    shown as IPv4). The kernel prints each 32-bit word in host (little-endian) order."""
    hex_address, hex_port = local.split(":")
    raw = b"".join(
        bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, len(hex_address), 8)
    )
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    address = ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return f"{address}:{int(hex_port, 16)}"


def is_loopback(address_and_port: str) -> bool:
    host = address_and_port.rpartition(":")[0]
    return ipaddress.ip_address(host).is_loopback


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    """A Phoenix server on 127.0.0.1 for this test session, stopped at its end."""
    server = PhoenixServer(tmp_path_factory.mktemp("phoenix"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
