#!/usr/bin/env bash
# Set up and run the main demo: a budgeted, traced agent over a sample workspace, offline
# (--live: against OpenAI or Anthropic, with OPENAI_API_KEY or ANTHROPIC_API_KEY set).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
exec .venv/bin/python examples/agent_demo.py "$@"
