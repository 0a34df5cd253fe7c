#!/usr/bin/env bash
# The README's commands, in order: install with the test extra, lint, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[test]"
python -m ruff check .
python -m pytest
