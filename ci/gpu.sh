#!/usr/bin/env bash
# Run the whole test suite with the CuPy (GPU) cases, then the GPU benchmark, on a CUDA machine.
#
#   bash ci/gpu.sh [WHEEL_DIR]
#
# For a machine without network access whose Python lacks array-api-compat and
# array-api-strict: put their wheels in WHEEL_DIR (default: .whl at the checkout root, ignored
# by git), e.g. on a machine with network access:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl array-api-compat array-api-strict
# They are installed into a private folder on PYTHONPATH; nothing else is changed. CuPy, NumPy
# and pytest must already be installed there.
set -uo pipefail
cd "$(dirname "$0")/.."
wheels="${1:-.whl}"
logs="${AGNOGRAD_LOG_DIR:-${TMPDIR:-/tmp}}"   # where the test and benchmark logs are kept
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
# JAX (if installed) would grab 75% of the GPU in every test process; keep it on the CPU.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" XLA_PYTHON_CLIENT_PREALLOCATE=false

if ! python3 -c "import array_api_compat, array_api_strict" 2>/dev/null; then
  site="${TMPDIR:-/tmp}/agnograd-site"
  echo "== installing array-api-compat / array-api-strict from $wheels into $site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl || { echo "wheel install failed"; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi not found"
python3 - <<'PY'
import sys, numpy, array_api_compat
print("python", sys.version.split()[0], "numpy", numpy.__version__,
      "array-api-compat", array_api_compat.__version__)
try:
    import cupy
    print("cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount(),
          cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
except Exception as exc:  # report, the tests will say the rest
    print("cupy unusable:", exc)
import agnograd as ag
print("agnograd backends:", ag.available_backends())
PY

par=""
if python3 -c "import xdist" 2>/dev/null; then par="-n ${AGNOGRAD_TEST_WORKERS:-8}"; fi

echo "== GPU cases (marker gpu)"
python3 -m pytest -q -p no:cacheprovider $par -m gpu 2>&1 | tee "$logs/gpu-tests.log" | tail -n 25
gpu_rc=${PIPESTATUS[0]}

echo "== capture mode: CUDA-graph tests, then agnograd train with and without --capture"
python3 -m pytest -q -p no:cacheprovider tests/test_capture.py tests/test_cli.py tests/test_replay_guards.py \
  -k "capture or cupy" \
  2>&1 | tee "$logs/capture-tests.log" | tail -n 25
capture_rc=${PIPESTATUS[0]}
: > "$logs/capture-train.log"
for flag in "" "--capture"; do
  python3 -m agnograd train --backend cupy --epochs 10 --no-progress $flag 2>&1 \
    | tee -a "$logs/capture-train.log" | tail -n 1
  [ "${PIPESTATUS[0]}" -eq 0 ] || capture_rc=1
done

echo "== the rest of the suite (CPU backends)"
python3 -m pytest -q -p no:cacheprovider $par -m "not gpu and not slow" 2>&1 | tee "$logs/cpu-tests.log" | tail -n 5
all_rc=${PIPESTATUS[0]}

bench_rc=0
if [ -f benchmarks/mlp_step.py ]; then
  # The captured rows of each configuration: the step with an SGD update, hand-written CuPy,
  # agnograd eager, agnograd captured as a CUDA graph and captured with graph=False (staged
  # replay), with the ratios captured/eager. It fails (exit 1) if a capture fails.
  echo "== GPU benchmark (captured rows: CUDA graph and staged graph=False, against eager and hand-written)"
  python3 benchmarks/mlp_step.py --backend cupy --markdown "$logs/bench.md" 2>&1 | tee "$logs/bench.log"
  bench_rc=${PIPESTATUS[0]}
  echo "== GPU memory: one medium step's extra pool bytes (hand-written, agnograd, PyTorch)"
  python3 benchmarks/memory.py step cupy 2>&1 | tee "$logs/memory.log" || bench_rc=1
fi

echo "== summary"
echo "gpu cases:  $(tail -n 1 "$logs/gpu-tests.log")"
echo "capture:    $(tail -n 1 "$logs/capture-tests.log"); train: $(grep -c 'test accuracy' "$logs/capture-train.log")/2 runs"
echo "cpu cases:  $(tail -n 1 "$logs/cpu-tests.log")"
if [ -f benchmarks/mlp_step.py ]; then
  echo "benchmark:  exit $bench_rc; captured rows (median ms, ratio):"
  grep -E "captured|staged recording" "$logs/bench.log" | sed 's/^/  /'
fi
[ "$gpu_rc" -eq 0 ] && [ "$capture_rc" -eq 0 ] && [ "$all_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
