#!/usr/bin/env bash
# The GPU check in one command, on a GPU host that has PyTorch with CUDA (no internet needed):
#
#   bash docker/gpu-check.sh                 # options go to `python -m benchmarks gpu-check` (--budget, --work-dir)
#
# In the NGC builder image of the compose stack everything is installed already; there the same check is
#   docker compose run --rm -v "$PWD/benchmarks/results:/app/benchmarks/results" prepare-models python -m benchmarks gpu-check
# Here:
# 1. PYTHON (default python3) must import torch. A virtual environment is used as it is; for the system's Python,
#    .gpu-check-venv is made on top of it with --system-site-packages, so its torch, tensorrt, onnxruntime-gpu stay;
# 2. the repository's other dependencies (docker/requirements-gpu-check.txt, pinned by requirements.lock) come from
#    ./wheelhouse when it exists (made where there is internet by docker/gpu-check-bundle.sh), without the network;
# 3. ONNX Runtime: the host's build is kept; the CPU build is installed only when there is none;
# 4. the check runs and writes benchmarks/results/gpu-check.json (exit status 1 when a row FAILed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "error: $PYTHON cannot import torch; set PYTHON to the interpreter that has PyTorch with CUDA" >&2
  exit 2
fi
if "$PYTHON" -c "import sys; sys.exit(sys.prefix == sys.base_prefix)"; then
  RUN="$PYTHON"            # already a virtual environment (one that has torch): install into it
else
  VENV=.gpu-check-venv     # the system's Python: a venv on top of it that still sees its torch/tensorrt
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
  RUN="$VENV/bin/python"
fi
INSTALL=("$RUN" -m pip install --quiet --disable-pip-version-check -c requirements.lock)
if [ -d wheelhouse ]; then
  INSTALL+=(--no-index --find-links wheelhouse)
fi
"${INSTALL[@]}" -r docker/requirements-gpu-check.txt
if ! "$RUN" -c "import onnxruntime" 2>/dev/null; then
  "${INSTALL[@]}" onnxruntime
fi
"$RUN" -m common.ort_install || true   # prints which ONNX Runtime build and providers are in use
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$RUN" -m benchmarks gpu-check "$@"
