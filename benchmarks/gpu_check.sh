#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU and no network, build in place, run the test
# suite on CUDA and every benchmark in full mode, and write a results table naming the GPU.
# Sized to finish in under 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      (default: benchmarks/results/gpu)
#
# Needs torch (CUDA build), scikit-build-core, pybind11, cmake>=3.26 and ninja importable.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LMGNN_WITH_CUDA=ON
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
PY="${PYTHON:-python3}"

gpu=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
echo "GPU check on: $gpu"
"$PY" -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -n 3
"$PY" -c "import lmgnn_fast, json; print(json.dumps(lmgnn_fast.build_info()))" | tee "$OUT/build_info.json"

set +e
timeout 240 "$PY" -m pytest -q -x tests -m "not slow" 2>&1 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}
bench_rc=0
for f in benchmarks/bench_*.py; do
  LMGNN_BENCH=full LMGNN_BENCH_OUT="$OUT" timeout 120 "$PY" "$f" 2>&1 | tee -a "$OUT/bench.log"
  rc=${PIPESTATUS[0]}; [ "$rc" -eq 0 ] || bench_rc=$rc
done
set -e

{
  echo "# GPU check — $gpu"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- torch: $("$PY" -c 'import torch; print(torch.__version__)')"
  echo "- build: $(cat "$OUT/build_info.json")"
  echo "- tests: exit $tests_rc — $(tail -n 1 "$OUT/tests.log")"
  echo "- benchmarks: exit $bench_rc"
  echo
  grep -E '^(###|\|)' "$OUT/bench.log" || true
} > "$OUT/RESULTS.md"
cat "$OUT/RESULTS.md"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
