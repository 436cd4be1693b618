"""Keeping credentials out of traces, logs and error messages.

``redact`` replaces anything that looks like an API key or bearer token, and
the literal values of the usual credential environment variables, with
``[REDACTED]``. Providers pass every provider error message through it before
raising; transcripts pass through it before they are stored.
"""

from __future__ import annotations

import os
import re

__all__ = ["redact"]

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
