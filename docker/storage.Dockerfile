# actlog storage service: records over LMDB behind gRPC (`python -m storage_service`).
# Build from the repository root:  docker build -f docker/storage.Dockerfile -t actlog-storage .
ARG PYTHON_IMAGE=python:3.11-slim

# Requirements from pyproject.toml, as a file: the install layer below is keyed on this file's
# content, so editing other parts of pyproject.toml does not reinstall anything.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml docker/pyproject_deps.py ./
RUN python pyproject_deps.py pyproject.toml storage > requirements.txt

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
    && mkdir -p /var/lib/actlog/lmdb \
    && chown -R actlog:actlog /var/lib/actlog
COPY docker/healthcheck.py /usr/local/bin/actlog-healthcheck
COPY --from=build /opt/venv /opt/venv
# The project itself: plain source on PYTHONPATH, in layers of its own, so a code change
# rebuilds only these two small layers.
COPY actlog /opt/actlog/actlog
COPY actlog_common /opt/actlog/actlog_common
COPY storage_service /opt/actlog/storage_service
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/actlog \
    PYTHONUNBUFFERED=1 \
    STORAGE_HOST=0.0.0.0 \
    STORAGE_PORT=50052 \
    ACTIVATION_LMDB_PATH=/var/lib/actlog/lmdb/activations.lmdb
USER 10001:10001
WORKDIR /var/lib/actlog
EXPOSE 50052 9052
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
    CMD ["actlog-healthcheck", "storage"]
CMD ["python", "-m", "storage_service"]
