#!/usr/bin/env bash
# Run the Array API conformance suite (https://github.com/data-apis/array-api-tests) against the
# agnograd namespace. Not part of the default `pytest` run; see docs/conformance.md.
#
#   bash ci/conformance.sh /path/to/array-api-tests [extra pytest args]
#
# Extra arguments go to pytest; ones naming tests (array_api_tests/test_linalg.py, ...) replace
# the default of the whole suite.
#
# The suite checkout needs its `array-api` spec submodule (git submodule update --init) and its
# requirements (pip install -r requirements.txt). Environment:
#   AGNOGRAD_CONFORMANCE_MAX_EXAMPLES  Hypothesis examples per test (default 100, the suite's own)
#   ARRAY_API_TESTS_VERSION            standard version to test (default 2025.12, agnograd's
#                                      __array_api_version__)
#   AGNOGRAD_BACKEND                   backend under the namespace (default numpy)
#   PYTHON                             the interpreter (default python3)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ] || [ ! -d "$1/array_api_tests" ]; then
    echo "usage: bash ci/conformance.sh /path/to/array-api-tests [extra pytest args]" >&2
    exit 2
fi
suite="$(cd "$1" && pwd)"
shift
if [ ! -d "$suite/array-api/src" ]; then
    echo "$suite/array-api is empty: run 'git submodule update --init' in the suite" >&2
    exit 2
fi

export ARRAY_API_TESTS_MODULE=agnograd
export ARRAY_API_TESTS_VERSION="${ARRAY_API_TESTS_VERSION:-2025.12}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
max_examples="${AGNOGRAD_CONFORMANCE_MAX_EXAMPLES:-100}"

echo "array-api-tests commit: $(git -C "$suite" rev-parse HEAD 2>/dev/null || echo unknown)"
echo "spec (array-api) commit: $(git -C "$suite/array-api" rev-parse HEAD 2>/dev/null || echo unknown)"
echo "API version: $ARRAY_API_TESTS_VERSION; max examples: $max_examples;" \
     "backend: ${AGNOGRAD_BACKEND:-numpy}"

# The whole suite, unless the extra arguments name tests of their own (array_api_tests/...).
paths=(array_api_tests)
for arg in "$@"; do
    case "$arg" in array_api_tests*) paths=() ;; esac
done

# --disable-deadline: Hypothesis' 800 ms per example is about the machine's load (and the
# backend's speed: array_api_strict indexes element by element slowly), not about conformance.
cd "$suite"
set +e
"${PYTHON:-python3}" -m pytest ${paths[@]+"${paths[@]}"} \
    -p no:cacheprovider -p no:randomly \
    --max-examples "$max_examples" --disable-deadline \
    -q -rfEX \
    -W "ignore:case for:UserWarning" -W "ignore:Special cases found:UserWarning" \
    "$@"
status=$?
set -e
exit $status
