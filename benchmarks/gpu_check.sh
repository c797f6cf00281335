#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU (no network needed), build in place with the
# CUDA kernels, check that errors raised by the CUDA host code reach Python
# (gpu_errors_smoke.py; a cuda-gdb backtrace if it crashes), run every CUDA test
# (CPU-vs-CUDA equality for each op, the trainer on the GPU), then the GPU rows of every
# kernel benchmark at full size, and write a results table naming the GPU. Each step has its own time limit so that a slow step cannot starve the
# rest; the whole script stays under about 8 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      (default: benchmarks/results/gpu)
#
# Writes OUT_DIR/{RESULTS.md,build.log,tests.log,bench.log,tables.tgz}. Needs torch (CUDA
# build), scikit-build-core, pybind11, cmake>=3.26, ninja, pytest (pytest-xdist if present).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="$(mkdir -p "${1:-benchmarks/results/gpu}" && cd "${1:-benchmarks/results/gpu}" && pwd)"
TABLES="$(mktemp -d)"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LMGNN_WITH_CUDA=ON
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
PY="${PYTHON:-python3}"
t_start=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - t_start ))s] $*"; }

gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
stamp "GPU: $gpu, archs $TORCH_CUDA_ARCH_LIST"
timeout 150 "$PY" -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1
build_rc=$?
tail -n 3 "$OUT/build.log"
info=$("$PY" -c "import lmgnn_fast, json; print(json.dumps(lmgnn_fast.build_info()))" 2>>"$OUT/build.log")
stamp "build exit $build_rc: $info"
[ "$build_rc" -eq 0 ] || { cat "$OUT/build.log" | tail -n 40; exit 1; }

timeout 40 "$PY" -X faulthandler benchmarks/gpu_errors_smoke.py 2>&1 | tail -n 8
if [ "${PIPESTATUS[0]}" -ne 0 ] && command -v cuda-gdb >/dev/null; then
  timeout 90 cuda-gdb -q -batch -ex run -ex bt --args "$PY" benchmarks/gpu_errors_smoke.py 2>&1 | tail -n 40
fi
stamp "error-path smoke done"

xdist=""
"$PY" -c "import xdist" 2>/dev/null && xdist="-n 4"
timeout 100 "$PY" -m pytest -q -p no:cacheprovider $xdist tests -k cuda 2>&1 | tee "$OUT/tests.log" | tail -n 25
tests_rc=${PIPESTATUS[0]}
stamp "tests exit $tests_rc"

bench_rc=0
export LMGNN_BENCH=full LMGNN_BENCH_DEVICES=cuda LMGNN_BENCH_MIN_TIME=0.1 LMGNN_BENCH_OUT="$TABLES"
for spec in aggregate:160 convert:30 sampling:60 cache:50; do
  name=${spec%%:*}; limit=${spec##*:}
  stamp "bench_$name (limit ${limit}s)" | tee -a "$OUT/bench.log"
  (cd benchmarks && timeout "$limit" "$PY" "bench_$name.py") >>"$OUT/bench.log" 2>&1
  rc=$?; [ "$rc" -eq 0 ] || { bench_rc=$rc; stamp "bench_$name exit $rc" | tee -a "$OUT/bench.log"; }
done
tar -C "$TABLES" -czf "$OUT/tables.tgz" .

{
  echo "# GPU check — $gpu"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- torch: $("$PY" -c 'import torch; print(torch.__version__)'), CUDA archs $TORCH_CUDA_ARCH_LIST"
  echo "- build: $info"
  echo "- CUDA tests (\`pytest tests -k cuda\`): exit $tests_rc — $(tail -n 1 "$OUT/tests.log")"
  echo "- benchmarks (LMGNN_BENCH=full, GPU rows): exit $bench_rc"
  echo
  grep -E '^(###|\||dense matmul|\[gpu_check)' "$OUT/bench.log" || true
} > "$OUT/RESULTS.md"
stamp "done"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
