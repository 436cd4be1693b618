#!/usr/bin/env bash
# Set up and run every benchmark (a few minutes; --quick for a smoke run): the
# core, the LLM layer, the agent loop, the run store and shared budgets (the
# last two start local PostgreSQL and Redis when installed), each printing its figures against
# baselines measured in the same run. For a single benchmark's own options,
# run it directly: .venv/bin/python benchmarks/bench_core.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)
for bench in bench_core bench_llm bench_agent bench_store bench_get_run bench_shared \
    bench_integrations_agents bench_integrations_chains; do
    echo "== benchmarks/$bench.py"
    .venv/bin/python "benchmarks/$bench.py" "${quick[@]}"
    echo
done
# Instruction counts need valgrind; a machine without it skips them.
if command -v valgrind >/dev/null 2>&1; then
    echo "== benchmarks/bench_instructions.py"
    .venv/bin/python benchmarks/bench_instructions.py
fi
