#!/usr/bin/env bash
# Build the documentation site (MkDocs + Material + mkdocstrings, configured in mkdocs.yml) with
# every warning an error: broken links, pages missing from the nav, docstrings that do not
# match their signatures. The tools come from the `docs` extra: pip install -e ".[docs]".
#
#   bash ci/docs.sh [SITE_DIR]      # default: site/ at the checkout root (ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1      # Material's notice about MkDocs 2.0; the docs extra pins mkdocs<2
python -m mkdocs build --strict --clean --site-dir "${1:-site}"
