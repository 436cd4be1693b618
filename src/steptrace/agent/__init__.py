"""steptrace.agent: a budgeted, traced tool-using agent loop."""
