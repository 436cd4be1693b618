#!/usr/bin/env bash
# Set up and run the main demo: a budgeted, traced agent over a sample workspace, offline
# (--live: against OpenAI or Anthropic, with OPENAI_API_KEY or ANTHROPIC_API_KEY set).
# Installs only what the demo runs: pydantic for its tools and genai-prices for its
# prices (the `schema` and `prices` extras), plus both SDKs for --live.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="schema,prices"
for arg in "$@"; do
    [ "$arg" = "--live" ] && extras="$extras,openai,anthropic"
done
scripts/setup.sh "$extras"
exec "${STEPTRACE_VENV:-.venv}/bin/python" examples/agent_demo.py "$@"
