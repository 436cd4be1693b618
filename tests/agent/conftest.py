"""Each test starts with a fresh LLM layer and must not leak sockets (the
fixture lives in ``tests/_llm_setup.py``, shared with the other LLM-layer tests)."""

from .._llm_setup import fresh_llm_configuration

__all__ = ["fresh_llm_configuration"]
