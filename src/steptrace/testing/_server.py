"""A small real HTTP server on 127.0.0.1 for faking model APIs in tests.

The official SDKs are exercised through their whole transport by pointing their
``base_url`` at this server. It knows nothing about any API: API modules
register a route (method + path) with a handler that receives the parsed JSON
body and headers and returns an ``HttpReply``: a JSON body with a status code, or a
server-sent-events stream. Every request is kept in ``requests`` so tests can
assert on exactly what an SDK sent. Standard library only.

An ``HttpReply`` can also misbehave as hostile or broken servers do: ``raw`` bytes
instead of JSON (with any ``content_type``), ``trickle_s`` (after the headers,
one keep-alive byte, or SSE comment, every ``trickle_s`` seconds for
``trickle_for`` seconds before the answer: a read timeout that restarts with
every byte never fires) and ``cut_after`` (a stream closed after that many
events, with no end).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeServer", "HttpReply", "RecordedRequest"]


@dataclass(frozen=True)
class HttpReply:
    """A response: ``body`` as JSON with ``status``, or, when ``events`` is set, a
    ``text/event-stream`` of ``(event name or None, data)`` pairs (data is JSON
    unless it is a string, which is sent as is, e.g. ``[DONE]``)."""

    status: int = 200
    body: Any = None
    events: Iterable[tuple[str | None, Any]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    """Sent as the body instead of ``body`` as JSON."""
    content_type: str = "application/json"
    trickle_s: float | None = None
    trickle_for: float = 0.0
    cut_after: int | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


# The fake API modules' name for it (``steptrace.testing.Reply`` is the scripted
# provider's answer).
Reply = HttpReply

Handler = Callable[[RecordedRequest], HttpReply]


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client hung up: an early-closed stream or a timeout test
        super().handle_error(request, client_address)


class FakeServer:
    """``with FakeServer() as server: ... server.url ...``; routes via ``route``."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method.upper(), path)] = handler

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._httpd is None:
            raise RuntimeError("FakeServer is not running: use it as a context manager")
        port = self._httpd.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> FakeServer:
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, Nagle's
            # algorithm and the client's delayed ACK add ~40 ms to every reply.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_GET(self) -> None:
                self._dispatch("GET")

            def _dispatch(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = raw.decode("utf-8", "replace")
                path = self.path.split("?", 1)[0]
                request = RecordedRequest(
                    method, path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with server._lock:
                    server.requests.append(request)
                handler = server._routes.get((method, path))
                if handler is None:
                    reply = HttpReply(404, {"error": {"message": f"no fake route {method} {path}"}})
                else:
                    try:
                        reply = handler(request)
                    except Exception as exc:  # a bug in a fake must show, not hang
                        reply = HttpReply(
                            500, {"error": {"message": f"fake handler failed: {exc}"}}
                        )
                self._send(reply)

            def _trickle(self, reply: HttpReply, keepalive: bytes) -> None:
                if reply.trickle_s is None:
                    return
                until = time.monotonic() + reply.trickle_for
                while time.monotonic() < until and server._httpd is not None:
                    self.wfile.write(keepalive)
                    self.wfile.flush()
                    time.sleep(reply.trickle_s)

            def _send(self, reply: HttpReply) -> None:
                try:
                    if reply.events is None:
                        self._send_body(reply)
                    else:
                        self._send_events(reply)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client hung up (early close, timeout)

            def _send_body(self, reply: HttpReply) -> None:
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                if reply.trickle_s is None:
                    self.send_header("Content-Length", str(len(payload)))
                else:  # the body runs to the end of the connection
                    self.send_header("Connection", "close")
                    self.close_connection = True
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self._trickle(reply, b" ")  # JSON allows leading whitespace
                self.wfile.write(payload)

            def _send_events(self, reply: HttpReply) -> None:
                assert reply.events is not None
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.close_connection = True
                self._trickle(reply, b": keep-alive\n\n")
                for sent, (event, data) in enumerate(reply.events):
                    if reply.cut_after is not None and sent >= reply.cut_after:
                        return  # the connection closes mid-stream
                    text = data if isinstance(data, str) else json.dumps(data)
                    chunk = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
                    self.wfile.write(chunk.encode())
                    self.wfile.flush()

        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), RequestHandler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits up to one poll
            name="steptrace-fake-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
