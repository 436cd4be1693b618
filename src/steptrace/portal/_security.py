"""Who may read the portal, and the headers every response carries.

``Guard`` decides per request: with a token configured, a request must carry
it as ``Authorization: Bearer <token>`` or as the portal's cookie, which a
first visit to ``/?token=<token>`` sets (then redirects to the same address
without the token, so it stays out of the history and logs). The cookie holds
an HMAC of the token, never the token itself. Without a token (loopback only,
``serve`` enforces that) the ``Host`` header must name the loopback: a page on
another site that rebinds its own name to 127.0.0.1 gets refused.

``SECURITY_HEADERS`` go on every response: a Content-Security-Policy allowing
only the portal's own script, style and connections (no inline script, no
eval, no frames, nothing from elsewhere), ``nosniff``, no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "COOKIE_NAME",
    "SECURITY_HEADERS",
    "Guard",
    "Verdict",
    "is_loopback",
]

COOKIE_NAME = "steptrace_portal"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "media-src 'none'",
        "worker-src 'none'",
        "frame-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets)
    is this machine's loopback."""
    name = host.strip().lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


_PORT = re.compile(r":[0-9]*")


def _host_name(host_header: str) -> str:
    """``Host`` without its port: ``127.0.0.1:8765`` -> ``127.0.0.1``,
    ``[::1]:8765`` -> ``[::1]``. Anything after the name but a port
    (``[::1]evil.example``) leaves the header whole, which no check accepts."""
    if host_header.startswith("["):
        name, bracket, rest = host_header.partition("]")
        name += bracket
    elif host_header.count(":") == 1:
        name, colon, port = host_header.partition(":")
        rest = colon + port
    else:
        return host_header
    return name if not rest or _PORT.fullmatch(rest) else host_header


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a request: let it through (``allowed``), redirect to
    ``location`` setting ``set_cookie``, or refuse with ``status``/``message``."""

    allowed: bool
    status: int = 200
    message: str = ""
    location: str | None = None
    set_cookie: str | None = None


_ALLOW = Verdict(True)


class Guard:
    """The token and host rules of one portal (see the module docstring)."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token.strip():
            raise ValueError("portal token: must not be empty or blank")
        self.token = token
        self._cookie = None if token is None else self.cookie_value(token)

    @staticmethod
    def cookie_value(token: str) -> str:
        return hmac.new(token.encode(), b"steptrace-portal-cookie", hashlib.sha256).hexdigest()

    def check(self, path: str, query: str, headers: Mapping[str, str]) -> Verdict:
        """The verdict on a ``GET`` of ``path?query`` with these (lower-cased)
        request headers."""
        if self.token is None:
            host = _host_name(headers.get("host", ""))
            if not is_loopback(host):
                return Verdict(
                    False,
                    403,
                    f"this portal answers only to a loopback address, not Host {host!r}; "
                    "open it at http://127.0.0.1:<port>/ (or start it with a token)",
                )
            return _ALLOW
        params = parse_qsl(query, keep_blank_values=True)
        offered = [value for name, value in params if name == "token"]
        if offered:
            if not hmac.compare_digest(offered[-1].encode(), self.token.encode()):
                return Verdict(False, 401, "the token in the address is wrong")
            rest = urlencode([(n, v) for n, v in params if n != "token"])
            assert self._cookie is not None
            # ``path`` is decoded: encode it again, and never start with two
            # slashes (``//host/`` would send the browser to another site).
            here = "/" + quote(path.lstrip("/"), safe="/:@!$&'()*+,;=")
            return Verdict(
                False,
                303,
                location=here + (f"?{rest}" if rest else ""),
                set_cookie=f"{COOKIE_NAME}={self._cookie}; Path=/; HttpOnly; SameSite=Strict",
            )
        if self._bearer_ok(headers.get("authorization", "")) or self._cookie_ok(
            headers.get("cookie", "")
        ):
            return _ALLOW
        return Verdict(
            False,
            401,
            "this portal needs its token: open the address `steptrace portal` printed "
            "(it ends in ?token=...) or send `Authorization: Bearer <token>`",
        )

    def _bearer_ok(self, authorization: str) -> bool:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            return False
        assert self.token is not None
        return hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def _cookie_ok(self, cookie_header: str) -> bool:
        if not cookie_header:
            return False
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except CookieError:
            return False
        morsel = jar.get(COOKIE_NAME)
        assert self._cookie is not None
        return morsel is not None and hmac.compare_digest(
            morsel.value.encode(), self._cookie.encode()
        )
