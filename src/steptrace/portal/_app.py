"""The portal as a plain ASGI application: routing, static files, JSON answers.

``PortalApp(reads, token=...)`` answers ``GET``/``HEAD`` only (the portal is
read-only): ``/`` and ``/runs/<id>`` give the one HTML page, ``/static/<file>``
its script and style sheet (from the package, with an ETag), ``/api/...`` the
JSON endpoints of ``_api`` run in worker threads so a slow read never stalls
other requests. Every response carries ``_security.SECURITY_HEADERS``; every
request first passes the ``Guard`` (token, loopback ``Host``). Errors are JSON
under ``/api`` (``{"error": code, "message": ...}``) and plain text elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote

from ..store import PagedReads
from . import _api
from ._security import SECURITY_HEADERS, Guard, Verdict

__all__ = ["PortalApp"]

logger = logging.getLogger("steptrace.portal")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_STATIC_TYPES = {
    "app.js": b"text/javascript; charset=utf-8",
    "app.css": b"text/css; charset=utf-8",
    "index.html": b"text/html; charset=utf-8",
}


def _load_static() -> dict[str, tuple[bytes, bytes]]:
    """The page's files and their ETags, read once from the package."""
    folder = resources.files("steptrace.portal").joinpath("static")
    files: dict[str, tuple[bytes, bytes]] = {}
    for name in _STATIC_TYPES:
        body = folder.joinpath(name).read_bytes()
        files[name] = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'.encode())
    return files


def _route(segments: list[str]) -> tuple[Any, list[str]] | None:
    """The API handler for a path (``*`` matches one segment) and the segments
    it captured; ``None`` when no endpoint matches."""
    for pattern, handler in _api.ENDPOINTS:
        if len(pattern) == len(segments) and all(
            p in ("*", s) for p, s in zip(pattern, segments, strict=True)
        ):
            return handler, [s for p, s in zip(pattern, segments, strict=True) if p == "*"]
    return None


def _failure(reads: PagedReads, error: Exception) -> str:
    """A read that failed, with where the store is (a damaged file says which)."""
    store = getattr(reads, "store", None)
    where = getattr(store, "path", None) or getattr(store, "url", None)
    text = f"{type(error).__name__}: {error}"
    return text if where is None else f"cannot read the run store at {where}: {text}"


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class PortalApp:
    """The ASGI callable (see the module docstring). ``reads`` is closed by
    whoever made it, not by the app."""

    def __init__(self, reads: PagedReads, *, token: str | None = None) -> None:
        self.reads = reads
        self.guard = Guard(token)
        self._static = _load_static()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets: the connection is refused by not accepting it
        raw_path = scope.get("raw_path") or scope["path"].encode()
        segments = [unquote(s) for s in bytes(raw_path).decode("latin-1").split("/") if s]
        query_string = bytes(scope.get("query_string", b"")).decode("latin-1")
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        is_api = bool(segments) and segments[0] == "api"
        head_only = scope["method"] == "HEAD"
        verdict = self.guard.check(scope["path"], query_string, headers)
        if not verdict.allowed:
            await self._refuse(send, verdict, is_api)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await self._error(
                send,
                405,
                "method_not_allowed",
                "the portal is read-only: GET only",
                is_api,
                extra=[(b"allow", b"GET, HEAD")],
            )
            return
        if is_api:
            await self._api(send, segments[1:], query_string, head_only)
        elif not segments or (len(segments) == 2 and segments[0] == "runs"):
            await self._file(send, "index.html", headers, head_only)
        elif len(segments) == 2 and segments[0] == "static" and segments[1] in self._static:
            await self._file(send, segments[1], headers, head_only)
        elif segments == ["favicon.ico"]:
            await self._send(send, 204, b"", b"text/plain", head_only)
        else:
            path = "/" + "/".join(segments)
            await self._error(send, 404, "not_found", f"nothing at {path}", is_api=False)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _api(self, send: Send, segments: list[str], query_string: str, head: bool) -> None:
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        route = _route(segments)
        if route is None:
            known = ", ".join(
                "/api/" + "/".join("{…}" if p == "*" else p for p in pattern)
                for pattern, _ in _api.ENDPOINTS
            )
            path = "/api/" + "/".join(segments)
            await self._error(
                send, 404, "no_such_endpoint", f"no API endpoint {path}; endpoints: {known}", True
            )
            return
        handler, captured = route
        try:
            payload = await asyncio.to_thread(handler, self.reads, query, *captured)
        except _api.ApiError as error:
            await self._error(send, error.status, error.code, error.message, True)
            return
        except Exception as error:  # a store failure: say so, naming the store; keep serving
            logger.exception("portal: GET /api/%s failed", "/".join(segments))
            await self._error(send, 500, "internal_error", _failure(self.reads, error), True)
            return
        await self._send(send, 200, _json_bytes(payload), b"application/json", head)

    async def _file(self, send: Send, name: str, headers: dict[str, str], head: bool) -> None:
        body, etag = self._static[name]
        extra = [(b"etag", etag), (b"cache-control", b"no-cache")]
        if headers.get("if-none-match", "").encode() == etag:
            await self._send(send, 304, b"", _STATIC_TYPES[name], True, extra)
            return
        await self._send(send, 200, body, _STATIC_TYPES[name], head, extra)

    async def _refuse(self, send: Send, verdict: Verdict, is_api: bool) -> None:
        if verdict.location is not None:
            extra = [(b"location", verdict.location.encode("latin-1", "replace"))]
            if verdict.set_cookie is not None:
                extra.append((b"set-cookie", verdict.set_cookie.encode()))
            await self._send(send, verdict.status, b"", b"text/plain", False, extra)
            return
        code = "unauthorized" if verdict.status == 401 else "forbidden"
        await self._error(send, verdict.status, code, verdict.message, is_api)

    async def _error(
        self,
        send: Send,
        status: int,
        code: str,
        message: str,
        is_api: bool,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if is_api:
            body = _json_bytes({"error": code, "message": message})
            await self._send(send, status, body, b"application/json", False, extra)
        else:
            body = f"{status} {message}\n".encode()
            await self._send(send, status, body, b"text/plain; charset=utf-8", False, extra)

    @staticmethod
    async def _send(
        send: Send,
        status: int,
        body: bytes,
        content_type: bytes,
        head: bool,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *SECURITY_HEADERS,
            *(extra or []),
        ]
        if not any(name == b"cache-control" for name, _ in headers):
            headers.append((b"cache-control", b"no-store"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})
