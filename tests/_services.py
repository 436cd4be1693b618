"""Real PostgreSQL and Redis servers on 127.0.0.1, started for the tests.

Each is a throwaway server in a temporary directory on a free port: PostgreSQL
from Debian's ``postgresql`` package (``initdb`` + ``pg_ctl``; as root they run
as the ``postgres`` user, since ``initdb`` refuses root), Redis from
``redis-server``. When a binary is missing the fixtures skip with a reason
saying how to install it; with ``STEPTRACE_REQUIRE_SERVICES=1`` (set by
``.ci/run``) they fail instead, so CI never skips silently. Benchmarks use the
same functions.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "MissingService",
    "database_url",
    "fresh_database",
    "local_postgres",
    "local_redis",
    "missing_reason",
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


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """Start a PostgreSQL server on 127.0.0.1; yield its ``postgresql://`` URL."""
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
        "-c fsync=off -c synchronous_commit=off -c max_connections=200"
    )
    pg_ctl = str(bin_dir / "pg_ctl")
    subprocess.run(
        _as_postgres_user(
            [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options, "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    """Start a Redis server on 127.0.0.1; yield its ``redis://`` URL."""
    server = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if server is None:
        raise MissingService(missing_reason("Redis"))
    root = Path(tempfile.mkdtemp(prefix="steptrace-redis-"))
    port = _free_port()
    process = subprocess.Popen(
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


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
