"""Budgets and a record inside the agent frameworks people already use: one
module per framework, each importing its framework only there (install its
extra: ``steptrace[litellm]``, ``steptrace[langchain]``, ...)."""
