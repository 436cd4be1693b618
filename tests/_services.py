"""Real PostgreSQL and Redis servers on 127.0.0.1, started for the tests.

Each is a throwaway server in a temporary directory on a free port: PostgreSQL
from Debian's ``postgresql`` package (``initdb`` + ``pg_ctl``; as root they run
as the ``postgres`` user, since ``initdb`` refuses root), Redis from
``redis-server``. When a binary is missing the fixtures skip with a reason
saying how to install it; with ``STEPTRACE_REQUIRE_SERVICES=1`` (set by
``.ci/run``) they fail instead, so CI never skips silently. Benchmarks use the
same functions.

A test run starts at most one server of each kind, whatever the number of
xdist workers: the controller makes a directory (``SHARED_DIR_ENV``), the first
worker that needs a server starts it under a file lock there and records it,
the others read the record, and the controller stops them all at the end. Each
worker then works in a database of its own (see ``tests/conftest.py``) and each
test in fresh keys or a fresh database, so workers never see each other's data.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "SHARED_DIR_ENV",
    "MissingService",
    "database_url",
    "fresh_database",
    "local_postgres",
    "local_redis",
    "missing_reason",
    "shared_service",
    "start_postgres",
    "start_redis",
    "stop_service",
    "stop_shared_services",
]

INSTALL_HINT = "apt-get install -y postgresql redis-server"


class MissingService(RuntimeError):
    """A server binary is not installed."""


def missing_reason(what: str) -> str:
    return f"{what} is not installed; install it with `{INSTALL_HINT}` to run these tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise MissingService(missing_reason("PostgreSQL"))


def _as_postgres_user(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


Service = dict[str, Any]
"""A running server: its ``url`` and what ``stop_service`` needs (plain JSON,
so another process than the one that started it can stop it)."""


def start_postgres() -> Service:
    """Start a PostgreSQL server on 127.0.0.1 (``stop_service`` stops it)."""
    bin_dir = _postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="steptrace-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "log"
    port = _free_port()
    subprocess.run(
        _as_postgres_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
        "-c fsync=off -c synchronous_commit=off -c max_connections=300"
    )
    pg_ctl = str(bin_dir / "pg_ctl")
    subprocess.run(
        _as_postgres_user(
            [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options, "start"]
        ),
        check=True,
        capture_output=True,
    )
    return {
        "kind": "postgres",
        "url": f"postgresql://postgres@127.0.0.1:{port}/postgres",
        "pg_ctl": pg_ctl,
        "data": str(data),
        "root": str(root),
    }


def start_redis() -> Service:
    """Start a Redis server on 127.0.0.1, daemonized (``stop_service`` stops it)."""
    server = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if server is None:
        raise MissingService(missing_reason("Redis"))
    root = Path(tempfile.mkdtemp(prefix="steptrace-redis-"))
    port = _free_port()
    pidfile = root / "redis.pid"
    subprocess.run(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(root),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(root / "log"),
        ],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.02)
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # written just after the port opens
    return {
        "kind": "redis",
        "url": f"redis://127.0.0.1:{port}/0",
        "pidfile": str(pidfile),
        "root": str(root),
    }


def stop_service(service: Service) -> None:
    """Stop a server started by ``start_postgres`` or ``start_redis`` (from any process)."""
    try:
        if service["kind"] == "postgres":
            subprocess.run(
                _as_postgres_user(
                    [service["pg_ctl"], "-D", service["data"], "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
            )
        else:
            with contextlib.suppress(OSError, ValueError):
                pid = int(Path(service["pidfile"]).read_text().strip())
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.kill(pid, 0)  # raises once it has gone
                    time.sleep(0.02)
    finally:
        shutil.rmtree(service["root"], ignore_errors=True)


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """Start a PostgreSQL server on 127.0.0.1; yield its ``postgresql://`` URL."""
    service = start_postgres()
    try:
        yield service["url"]
    finally:
        stop_service(service)


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    """Start a Redis server on 127.0.0.1; yield its ``redis://`` URL."""
    service = start_redis()
    try:
        yield service["url"]
    finally:
        stop_service(service)


# -- one server of each kind per test run, shared by every xdist worker ------------

SHARED_DIR_ENV = "STEPTRACE_TEST_SERVICES_DIR"
_STARTERS: dict[str, Callable[[], Service]] = {"postgres": start_postgres, "redis": start_redis}


def shared_service(kind: str, directory: Path) -> str:
    """The URL of this test run's ``kind`` server (``postgres`` or ``redis``),
    started by whichever process asks first. Processes take turns on a file
    lock in ``directory``; the server is recorded there for the others and
    for ``stop_shared_services``."""
    with open(directory / f"{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        record = directory / f"{kind}.json"
        if record.exists():
            service = json.loads(record.read_text())
        else:
            service = _STARTERS[kind]()
            record.write_text(json.dumps(service))
    return str(service["url"])


def stop_shared_services(directory: Path) -> None:
    """Stop every server ``shared_service`` started under ``directory``, and remove it."""
    try:
        for record in sorted(directory.glob("*.json")):
            stop_service(json.loads(record.read_text()))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def database_url(server_url: str, database: str) -> str:
    """``server_url`` (``postgresql://.../postgres``) pointed at ``database``."""
    return server_url.rsplit("/", 1)[0] + "/" + database


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server; yields its URL and drops it after
    (forcibly: a store left open by a failed test must not keep it)."""
    import psycopg
    from psycopg import sql

    name = "steptrace_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
