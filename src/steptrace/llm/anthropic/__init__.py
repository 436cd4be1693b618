"""Everything steptrace does with the ``anthropic`` SDK, in one place.

``provider`` holds ``AnthropicProvider`` (``llm_call`` through the Messages
API), ``instrument`` wraps an ``anthropic`` client the user already has, and
``_streams`` accounts that client's streams when they end. Both conclude
their calls through ``steptrace.llm.conclusion``. Importing this package
imports no SDK; its modules do, and say how to install it when it is missing.
"""
