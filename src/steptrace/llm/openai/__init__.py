"""Everything steptrace does with the ``openai`` SDK, in one place.

``provider`` holds ``OpenAIProvider`` (``llm_call`` through the Chat
Completions API, or any OpenAI-compatible server), ``instrument`` wraps an
``openai.OpenAI``/``AsyncOpenAI`` client the user already has, and
``_streams`` accounts that client's streams when they end. Both conclude
their calls through ``steptrace.llm.conclusion``. Importing this package
imports no SDK; its modules do, and say how to install it when it is missing.
"""
