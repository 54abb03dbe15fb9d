#!/usr/bin/env bash
# One-shot step before Triton starts: train each model (or resume / confirm a finished run) and build it for THIS
# host, publishing a new version only when the builders' gate passes and the weights or settings changed.
# Environment:
#   MODELS            space-separated model names (default "digits textclf")
#   CONFIG_<model>    training config file for <model> (default training/configs/<model>.toml); textclf uses the
#                     sidecar's file so the trainer service can keep training the same run
#   TENSORRT          builders' --tensorrt mode: required on a GPU host, off on the CPU stack
set -euo pipefail
for model in ${MODELS:-digits textclf}; do
  config_var="CONFIG_${model}"
  config="${!config_var:-training/configs/${model}.toml}"
  echo "== ${model}: training with ${config} (resumes or confirms a finished run)"
  python -m training --config "${config}" --run-dir "runs/${model}" --set sidecar.enabled=false
  echo "== ${model}: building (tensorrt: ${TENSORRT:-auto})"
  python -m builders build --run-dir "runs/${model}" --repository model_repository --tensorrt "${TENSORRT:-auto}"
done
