# Triton for the GPU host: NVIDIA's image, plus what our python-backend models import (the textclf tokenizer and
# label steps of the text ensemble, and the CPU runtime when a model is served with its default CPU config).
ARG NGC_TAG=24.12
FROM nvcr.io/nvidia/tritonserver:${NGC_TAG}-py3
RUN pip install --no-cache-dir numpy==1.26.4 tokenizers==0.23.3 onnxruntime==1.31.1
# the admin-token wrapper (python -m clients.token_exec): it passes $TRITON_ADMIN_TOKEN to tritonserver and hides it
# from the host's process list; it needs only these two files and the standard library
COPY clients/__init__.py clients/admin_token.py clients/token_exec.py /opt/platform/clients/
ENV PYTHONPATH=/opt/platform
