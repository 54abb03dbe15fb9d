#!/usr/bin/env bash
# Where there is internet: pack this repository and the wheels docker/gpu-check.sh needs into one file for a GPU host
# that has none.
#
#   bash docker/gpu-check-bundle.sh [PYTHON_VERSION]     # the GPU host's Python, default 3.12 (NGC 24.x images)
#   # copy gpu-check-bundle.tar.gz over, then there:  tar xzf gpu-check-bundle.tar.gz && bash docker/gpu-check.sh
#
# PyTorch, TensorRT and onnxruntime-gpu are large and come with the GPU host; the wheels here are the small rest
# (about 150 MB, Linux x86-64 only) plus the CPU onnxruntime, used only where the host has no ONNX Runtime at all.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
rm -rf wheelhouse
python3 -m pip download --quiet --disable-pip-version-check --dest wheelhouse --only-binary=:all: \
  --implementation cp --python-version "$PYV" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 --platform linux_x86_64 \
  -c requirements.lock -r docker/requirements-gpu-check.txt onnxruntime
git ls-files -z | tar czf gpu-check-bundle.tar.gz --null -T - wheelhouse
echo "wrote gpu-check-bundle.tar.gz ($(du -h gpu-check-bundle.tar.gz | cut -f1)): the repository at $(git rev-parse --short HEAD) + $(ls wheelhouse | wc -l) wheels for Python $PYV"
