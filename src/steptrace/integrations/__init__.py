"""steptrace.integrations: budgets and a record inside the agent frameworks you
already use, one module per framework, each importing its framework only there.

- ``steptrace.integrations.openai_agents`` (extra ``steptrace[openai-agents]``)
- ``steptrace.integrations.pydantic_ai`` (extra ``steptrace[pydantic-ai]``)
- ``steptrace.integrations.litellm`` (extra ``steptrace[litellm]``)
- ``steptrace.integrations.langchain`` (extra ``steptrace[langchain]``; LangGraph too)

Import the module you need; this package itself imports nothing.
"""
