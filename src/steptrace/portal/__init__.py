"""The local web viewer: ``steptrace portal`` (extra ``steptrace[portal]``).

A read-only page over a run store: the runs list (filters, sorting, totals,
cost by model and by day) and each run (step tree with budget bars, a
waterfall of spans, the event stream, every LLM call's prompt and response,
the summary; a running run updates live). ``serve(store_target, host, port,
token, open_browser)`` runs it under uvicorn on 127.0.0.1 by default;
``create_app(store)`` gives the bare ASGI callable. The app itself is standard
library only; uvicorn is imported when ``serve`` starts.
"""

from ._server import create_app, serve

__all__ = ["create_app", "serve"]
