#!/usr/bin/env bash
# One-shot step before Triton starts: train each model (or resume/confirm a finished run) and build it for THIS
# host's targets, publishing a new version only when the builders' gate passes and the weights changed.
# Environment: MODELS (space separated), EPOCHS, TARGETS (comma separated builder targets).
set -euo pipefail
for model in ${MODELS:-digits textclf}; do
  echo "== ${model}: training (resumes or confirms a finished run)"
  python -m training --model "${model}" --run-dir "runs/${model}" --seed 0 --epochs "${EPOCHS:-10}"
  echo "== ${model}: building targets ${TARGETS}"
  python -m builders build --run-dir "runs/${model}" --repository model_repository --targets "${TARGETS}"
done
