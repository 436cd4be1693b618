"""Keeping credentials out of everything steptrace shows, stores, sends or logs.

One registry of the secrets this process was given: API keys passed to
providers (``OpenAIProvider(api_key=...)``) or held by clients handed to
``instrument()``, and the passwords of database and Redis URLs (stores,
shared budget pools). Configuration paths add to it (``register_secret``,
``register_credentials``, ``register_url``); nothing removes from it.

``redact`` replaces every registered secret, the values of the usual
credential environment variables, URL passwords and anything shaped like an
API key or bearer token with ``[REDACTED]`` (URL passwords with ``***``);
``redacted`` does it to every string of JSON-shaped data. Every surface uses
it: provider errors before they are raised, span and run errors when they
are recorded (so the store, exports and the viewer get them redacted),
transcripts before they are stored, the CLI's and the portal's output, and
steptrace's own loggers (a filter on each, installed on import).

Secrets shorter than 8 characters are not registered: blanking every
occurrence of ``test`` or ``secret`` would garble ordinary text, and a key
that short protects nothing. Standard library only (a core module).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = [
    "LOGGERS",
    "REDACTED",
    "redact",
    "redact_url",
    "redacted",
    "register_credentials",
    "register_secret",
    "register_url",
]

REDACTED = "[REDACTED]"

_PATTERNS = re.compile(
    r"(sk-ant-[A-Za-z0-9_\-]{8,}"  # Anthropic keys
    r"|sk-(?:proj-)?[A-Za-z0-9_\-]{16,}"  # OpenAI keys
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}"  # Authorization header values
    r"|(?i:(?:api[_-]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._\-]{8,})"
)
# ``scheme://user:PASSWORD@host`` and ``?password=PASSWORD`` in any text.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#]*:)([^\s/@?#]+)(@)")
_PASSWORD_PARAM = re.compile(r"([?&](?i:password)=)([^&#\s]+)")

_SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")

MIN_SECRET_LENGTH = 8

LOGGERS = ("steptrace", "steptrace.export", "steptrace.portal", "steptrace.store")
"""Every logger steptrace writes to; each carries the redacting filter."""

_lock = threading.Lock()
_secrets: set[str] = set()
_known: re.Pattern[str] | None = None
"""One alternation of the registered secrets, longest first (rebuilt on change)."""


def register_secret(value: object) -> None:
    """Remember ``value`` (a string of at least 8 characters; anything else is
    ignored) as a secret to redact wherever text can surface."""
    global _known
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _known = re.compile("|".join(map(re.escape, ordered)))


def register_credentials(*sources: object) -> None:
    """Remember the credentials of each source: a string is a key; any other
    object (an SDK client) gives its ``api_key`` and ``auth_token`` and the
    password of its ``base_url``. ``None`` is skipped."""
    for source in sources:
        if source is None:
            continue
        if isinstance(source, str):
            register_secret(source)
            continue
        for name in ("api_key", "auth_token"):
            register_secret(getattr(source, name, None))
        base_url = getattr(source, "base_url", None)
        if base_url is not None:
            redact_url(str(base_url))


def redact(text: str) -> str:
    """``text`` with credentials replaced (see the module docstring)."""
    known = _known
    if known is not None:
        text = known.sub(REDACTED, text)
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= MIN_SECRET_LENGTH:
            text = text.replace(value, REDACTED)
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1***\3", text)
    if "=" in text:
        text = _PASSWORD_PARAM.sub(r"\1***", text)
    return _PATTERNS.sub(REDACTED, text)


def redacted(value: Any) -> Any:
    """``value`` with every string (dict keys included) passed through ``redact``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {(redact(k) if isinstance(k, str) else k): redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` query
    parameter) replaced by ``***``, for messages; the password is registered,
    so it is redacted wherever else it shows up too."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            user, _, password = userinfo.partition(":")
            _register_password(password)
            userinfo = user + ":***"
        netloc = f"{userinfo}@{hosts}"
    items = []
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if name.lower() == "password":
            _register_password(value)
            item = "password=***"
        items.append(item)  # other parameters exactly as written (still percent-encoded)
    query = "&".join(items)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def register_url(url: str) -> None:
    """Remember the password of ``url`` (a store's or a pool's), if it has one."""
    redact_url(url)


def _register_password(password: str) -> None:
    register_secret(password)
    register_secret(urllib.parse.unquote(password))


class _RedactingFilter(logging.Filter):
    """Redacts a record's message, arguments and traceback before any handler
    sees it (the formatted traceback is cached on the record, redacted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = _RedactingFilter()
for _name in LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)
