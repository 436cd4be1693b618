"""Starting the portal: ``create_app`` (the ASGI callable over a store) and
``serve`` (that app under uvicorn, extra ``steptrace[portal]``).

``serve`` refuses, before anything listens, to bind an address other than the
loopback without a token, and to open a SQLite store file that does not exist
(it would create an empty one). It prints the address to open (with the token,
when there is one), optionally opens a browser on it, and serves until
interrupted; the store is closed on the way out.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import webbrowser
from pathlib import Path
from urllib.parse import quote

from .._redact import redact_url
from ..store import RunStore, is_database_url, open_store, paged_reads, store_location
from ._app import PortalApp
from ._security import is_loopback

__all__ = ["create_app", "serve"]

_INSTALL_HINT = "the portal needs uvicorn: pip install 'steptrace[portal]'"


def create_app(store: RunStore, *, token: str | None = None) -> PortalApp:
    """The portal's ASGI app over an open ``store`` (closing the store, and
    ``app.reads``, is the caller's business). With ``token`` every request must
    carry it; without, only requests addressed to a loopback ``Host``
    are answered."""
    return PortalApp(paged_reads(store), token=token)


def _check_target(store_target: str | None) -> str:
    location = store_location(store_target)
    if not is_database_url(location) and not Path(location).is_file():
        where = (
            "given"
            if store_target is not None
            else "$STEPTRACE_STORE"
            if os.environ.get("STEPTRACE_STORE")
            else "the default, under the working directory"
        )
        raise FileNotFoundError(
            f"no run store at {location} ({where}); record runs first "
            "(steptrace.store.record_runs() or `steptrace run`), or name the store"
        )
    return location


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        raise OSError(
            error.errno, f"the portal cannot listen on {host}:{port}: {error.strerror}"
        ) from error
    sock.set_inheritable(True)
    return sock


def serve(
    store_target: str | None,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    open_browser: bool = False,
) -> None:
    """Serve the portal over the store at ``store_target`` (a SQLite path or a
    ``postgresql://`` URL; ``None``: ``$STEPTRACE_STORE`` or
    ``.steptrace/runs.db``) on ``host:port`` until interrupted (``port`` 0: any
    free port).

    Raises ``ValueError`` for a non-loopback ``host`` without a ``token`` or a
    port out of range, ``FileNotFoundError`` when the SQLite file does not
    exist, ``OSError`` when the address cannot be bound, ``ImportError`` without
    uvicorn, ``sqlite3.DatabaseError`` when the store cannot be read. A store
    that cannot be written is served read-only."""
    if token is not None and not token.strip():
        raise ValueError("portal token: must not be empty or blank")
    if not is_loopback(host) and token is None:
        raise ValueError(
            f"refusing to serve the portal on {host}, which is not the loopback, "
            "without a token: anyone who can reach it could read every run; pass a "
            "token (`steptrace portal --token ...`) or bind 127.0.0.1"
        )
    if not 0 <= port <= 65535:
        raise ValueError(f"portal port must be from 0 to 65535, got {port}")
    try:
        import uvicorn
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    location = _check_target(store_target)
    store = open_store(location, reading=True)
    app = create_app(store, token=token)
    try:
        store.list_runs(limit=1)  # a damaged file says so now, before anything listens
        sock = _listen(host, port)
        bound_port = sock.getsockname()[1]
        shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
        url = f"http://{shown}:{bound_port}/"
        if token is not None:
            url += f"?token={quote(token, safe='')}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            server_header=False,
            proxy_headers=False,
        )
        server = uvicorn.Server(config)
        shown_store = redact_url(location) if is_database_url(location) else location
        print(f"steptrace portal on {url} (store: {shown_store}); Ctrl-C stops it", flush=True)
        if open_browser:
            threading.Thread(
                target=_open_when_started, args=(server, url), daemon=True, name="portal-browser"
            ).start()
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
    finally:
        app.reads.close()
        store.close()


def _open_when_started(server: object, url: str) -> None:
    deadline = time.monotonic() + 30
    while not getattr(server, "started", False):
        if time.monotonic() > deadline or getattr(server, "should_exit", False):
            return
        time.sleep(0.05)
    try:
        webbrowser.open(url)
    except webbrowser.Error as error:
        print(f"could not open a browser ({error}); open {url}", file=sys.stderr)
