"""Keeping credentials out of traces, logs and error messages.

``redact`` replaces anything that looks like an API key or bearer token, and
the literal values of the usual credential environment variables, with
``[REDACTED]``; ``redacted`` does it to every string of JSON-shaped data.
Providers pass every provider error message through it before raising;
cassettes and stored transcripts pass through it before they are written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["redact", "redacted"]

_PATTERNS = re.compile(
    r"(sk-ant-[A-Za-z0-9_\-]{8,}"  # Anthropic keys
    r"|sk-(?:proj-)?[A-Za-z0-9_\-]{16,}"  # OpenAI keys
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}"  # Authorization header values
    r"|(?i:(?:api[_-]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._\-]{8,})"
)

_SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")

REDACTED = "[REDACTED]"


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``[REDACTED]``."""
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, REDACTED)
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
