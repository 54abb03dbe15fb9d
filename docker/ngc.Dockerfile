# Training, building (ONNX -> TensorRT plans for THIS host's GPU) and tooling on a GPU host.
# Same NGC release as the Triton image (docker/triton.Dockerfile), so plans are built with the TensorRT version
# Triton loads them with; the builders refuse to publish or load a plan whose metadata disagrees.
ARG NGC_TAG=24.12
FROM nvcr.io/nvidia/pytorch:${NGC_TAG}-py3
WORKDIR /app
COPY docker/requirements-ngc.txt /tmp/requirements-ngc.txt
# ONNX Runtime's CPU and GPU builds are alternatives: remove whatever the base image has, install only the GPU build
RUN pip uninstall -y onnxruntime onnxruntime-gpu \
 && pip install --no-cache-dir -r /tmp/requirements-ngc.txt
COPY common ./common
RUN python -m common.ort_install --expect onnxruntime-gpu
COPY training ./training
COPY builders ./builders
COPY clients ./clients
COPY monitoring ./monitoring
COPY benchmarks ./benchmarks
COPY deploy ./deploy
COPY docker/prepare-models.sh ./docker/prepare-models.sh
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1
