"""What the LangChain handler and the shared request path cost, in CPU
instructions, which a busy machine does not disturb.

Run ``python benchmarks/bench_integrations_instructions.py [--src DIR]``
(needs ``valgrind``; about 2 minutes a checkout). Importing LangChain under
callgrind takes minutes, so the handler is measured without it: a stand-in
``langchain_core`` (only ``BaseCallbackHandler`` and
``register_configure_hook``, written to a temporary directory) lets
``steptrace.integrations.langchain`` import, and the handler is called as
LangChain's ``CallbackManager`` calls it, with objects shaped like
LangChain's (a human message; an ``LLMResult`` of one ``ChatGeneration``
whose ``AIMessage`` has ``usage_metadata`` and ``response_metadata``). Rows,
instructions per request in a budgeted step, minus the same loop doing
nothing: ``ModelRequest`` alone (pre-flight hold, span, priced conclusion,
settle: what the LiteLLM and LangChain integrations share, as
``bench_instructions.py``'s "request" row) and the handler's
``on_chat_model_start`` + ``on_llm_end`` (that, plus reading LangChain's
arguments). LangChain's own dispatch to the handler is not counted here
(``bench_integrations_chains.py`` times it). ``--src`` also measures another
checkout's ``src`` in the same run, for a before/after.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _machine import instructions

HERE = Path(__file__).resolve().parent

STUB = {
    "langchain_core/__init__.py": "",
    "langchain_core/callbacks/__init__.py": (
        "class BaseCallbackHandler:\n    raise_error = False\n    run_inline = False\n"
    ),
    "langchain_core/tracers/__init__.py": "",
    "langchain_core/tracers/context.py": (
        "def register_configure_hook(*args, **kwargs):\n    pass\n"
    ),
}

PROGRAM = r"""
import gc, sys, uuid
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import steptrace
from steptrace.integrations._chains_request import ModelRequest, TokenCounts
from steptrace.integrations.langchain import StepTraceCallbackHandler
case, n = sys.argv[3], int(sys.argv[4])
gc.disable()

class FlatPrices:
    def cost_usd(self, model, input_tokens, output_tokens, *, cache_read_tokens=0,
                 cache_write_tokens=0):
        return (input_tokens + output_tokens) * 1e-6

steptrace.configure(price_source=FlatPrices())

class Human:
    type = "human"
    def __init__(self, content):
        self.content = content

class AI:
    type = "ai"
    def __init__(self, content, response_metadata, usage_metadata):
        self.content = content
        self.response_metadata = response_metadata
        self.usage_metadata = usage_metadata
        self.tool_calls = []
        self.id = "run-bench"

class ChatGeneration:
    def __init__(self, message):
        self.message = message
        self.text = message.content
        self.generation_info = None

class LLMResult:
    def __init__(self, generations):
        self.generations = generations
        self.llm_output = None

messages = [[Human("What is it?")]]
result = LLMResult([[ChatGeneration(AI(
    "The answer is forty-two.",
    {"id": "chatcmpl-bench", "model_name": "gpt-4o-mini", "finish_reason": "stop"},
    {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19,
     "input_token_details": {"audio": 0, "cache_read": 0},
     "output_token_details": {"audio": 0, "reasoning": 0}},
))]])
metadata = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini", "ls_model_type": "chat"}
params = {"model": "gpt-4o-mini", "_type": "openai-chat", "max_tokens": 200}
serialized = {"id": ["langchain", "chat_models", "openai", "ChatOpenAI"]}
run_ids = [uuid.uuid4() for _ in range(n)]

def none():
    for run_id in run_ids:
        pass

def request():
    start, counts = ModelRequest.start, TokenCounts(12, 7)
    for _ in run_ids:
        start("m", system="bench", estimated_input_tokens=10, max_output_tokens=100).finish(
            counts, response_id="r", finish_reasons=["stop"]
        )

def handler():
    handler = StepTraceCallbackHandler()
    for run_id in run_ids:
        handler.on_chat_model_start(serialized, messages, run_id=run_id, parent_run_id=None,
                                    tags=[], metadata=metadata, invocation_params=params)
        handler.on_llm_end(result, run_id=run_id, parent_run_id=None, tags=[])

@steptrace.step(name="bench.budget", budget={"max_tokens": 10**15, "max_usd": 1e6})
def budgeted(body):
    body()

with steptrace.run("bench"):
    budgeted({"none": none, "request": request, "handler": handler}[case])
"""

CASES = [
    ("request", "ModelRequest start + finish"),
    ("handler", "LangChain handler, chat model start + end"),
]


def measure(program: Path, stub: Path, src: Path, n: int) -> dict[str, float]:
    def count(case: str) -> int:
        return instructions([sys.executable, str(program), str(src), str(stub), case, str(n)])

    empty = count("none")
    return {case: (count(case) - empty) / n for case, _ in CASES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000, help="requests a case (default 5000)")
    parser.add_argument("--src", type=Path, help="also measure this checkout's src directory")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    checkouts = {"this": HERE.parent / "src"}
    if args.src is not None:
        checkouts["other"] = args.src.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "stub"
        for name, text in STUB.items():
            (stub / name).parent.mkdir(parents=True, exist_ok=True)
            (stub / name).write_text(text)
        program = Path(tmp) / "cases.py"
        program.write_text(PROGRAM)
        results = {name: measure(program, stub, src, args.n) for name, src in checkouts.items()}
    print(f"instructions per request (callgrind, {args.n:,} requests a case)")
    for name, src in checkouts.items():
        print(f"  {name}: {src}")
    header = f"{'case':44}" + "".join(f"{name:>12}" for name in checkouts)
    if len(checkouts) == 2:
        header += f"{'this / other':>14}"
    print(header)
    print("-" * len(header))
    for case, label in CASES:
        cells = "".join(f"{results[name][case]:>12,.0f}" for name in checkouts)
        if len(checkouts) == 2:
            cells += f"{results['this'][case] / results['other'][case]:>13.2f}x"
        print(f"{label:44}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
