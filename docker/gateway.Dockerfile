# actlog gateway: the OpenAI-compatible HTTP API (`python -m gateway`).
# Build from the repository root:  docker build -f docker/gateway.Dockerfile -t actlog-gateway .
ARG PYTHON_IMAGE=python:3.11-slim

# Requirements as a file of their own: see storage.Dockerfile.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml docker/pyproject_deps.py ./
RUN python pyproject_deps.py pyproject.toml gateway > requirements.txt

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY --from=requirements /src/requirements.txt ./
RUN pip install -r requirements.txt && pip uninstall -y pip

FROM ${PYTHON_IMAGE}
RUN useradd --no-log-init --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/actlog --shell /usr/sbin/nologin actlog \
    && mkdir -p /var/lib/actlog \
    && chown -R actlog:actlog /var/lib/actlog
COPY docker/healthcheck.py /usr/local/bin/actlog-healthcheck
COPY --from=build /opt/venv /opt/venv
# The project itself: plain source on PYTHONPATH, in layers of its own, so a code change
# rebuilds only these two small layers.
COPY actlog /opt/actlog/actlog
COPY actlog_common /opt/actlog/actlog_common
COPY gateway /opt/actlog/gateway
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/actlog \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000
USER 10001:10001
WORKDIR /var/lib/actlog
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
    CMD ["actlog-healthcheck", "gateway"]
CMD ["python", "-m", "gateway"]
