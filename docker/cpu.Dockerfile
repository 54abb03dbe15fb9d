# The whole platform on a host without a GPU: Debian's Python 3.11 with the project's pinned CPU environment,
# including the real Triton 2.51 that ships in the nvidia-pytriton wheel (python backend running ONNX Runtime).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11 make ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# the CPU build of torch comes from PyTorch's index; everything else from PyPI, pinned by requirements.lock
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu PYTHONUNBUFFERED=1
COPY pyproject.toml requirements.lock README.md ./
COPY common ./common
RUN python3.11 -m common.bootstrap --venv /opt/venv \
 && /opt/venv/bin/python -m common.ort_install --expect onnxruntime
COPY training ./training
COPY builders ./builders
COPY clients ./clients
COPY monitoring ./monitoring
COPY benchmarks ./benchmarks
COPY docker/prepare-models.sh ./docker/prepare-models.sh
COPY demo ./demo
COPY deploy ./deploy
ENV PATH=/opt/venv/bin:$PATH
