#!/usr/bin/env bash
# The README's commands, in order: install with the test, docs and oracle (PyTorch, the tests' reference)
# extras, lint, type-check, run the tests, then build the documentation site with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[test,docs,oracle]"
python -m ruff check .
python -m mypy
python -m pytest
bash ci/docs.sh
