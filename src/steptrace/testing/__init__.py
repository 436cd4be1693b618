"""Test doubles for steptrace users: fake model API servers, the scripted
provider, and a guard that fails a test which reaches a real network address."""

from ..llm.providers.scripted import ScriptedProvider, count_tokens
from ._network import NetworkBlocked, block_network
from ._server import FakeServer, RecordedRequest, Reply

__all__ = [
    "FakeServer",
    "NetworkBlocked",
    "RecordedRequest",
    "Reply",
    "ScriptedProvider",
    "block_network",
    "count_tokens",
]
