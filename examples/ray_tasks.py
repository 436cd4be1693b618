"""The worker side of ``ray_fanout.py``: the step and the Ray task it runs.

They live in a module the workers import, not in the driver script: Ray sends
functions of the script it runs by value (pickled whole), and a
``@steptrace.step`` function cannot travel that way; from an importable module
it is sent by name and the worker imports it (``ray_fanout.py`` ships this file
to the workers with ``py_modules``). ``start_recording`` is the
``worker_process_setup_hook``: each Ray worker process records into the one
run store named by ``STEPTRACE_STORE``.
"""

from __future__ import annotations

import ray

import steptrace
import steptrace.store
from steptrace.llm import ScriptedProvider, llm_call


class Prices:
    """Illustrative prices: $0.15 / $0.60 per million tokens in / out."""

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float:
        return (input_tokens * 0.15 + output_tokens * 0.60) / 1_000_000


model = ScriptedProvider(lambda request: "Summary: the deploy doubled the consumers' latency.")


def start_recording() -> None:
    """Once in each worker process: prices, and the one store ($STEPTRACE_STORE)."""
    steptrace.configure(price_source=Prices())
    steptrace.store.record_runs()


@steptrace.step(model="gpt-4o-mini", error_boundary="continue")
def summarize(document: str) -> str | None:
    return llm_call(f"Summarize: {document}", max_tokens=100, provider=model).text


@ray.remote
def summarize_task(carrier: dict[str, object], document: str) -> str | None:
    with steptrace.extract(carrier):  # the same run, the same shared budget
        return summarize(document)
