"""steptrace.llm: ``llm_call`` with budgets, tracing and schema retry, over real providers."""
