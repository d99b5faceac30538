"""`make test-compose`: the CPU stack in real containers, checked through its published ports.

Uses whatever Docker-compatible engine answers `docker info` (DOCKER_HOST as set); fails when
none does (.ci/run sets one up with docker/engine-setup.sh first). Phases, each timed:

1. config:   `docker compose config -q` for the GPU stack and the CPU stack.
2. build:    every CPU-stack image (the torch CPU wheel comes from pip's own find-links when
             this machine has it there, else from PyTorch's CPU index).
3. up:       `docker compose up -d --wait`.
4. capture:  one completion through the published gateway port with the official openai client;
             its record found by the prompt's SHA-256 through the published storage port with
             actlog's StorageClient; activations shaped (positions, the model's hidden size).
   metrics:  each service's /metrics through its published port, parsed with
             prometheus_client: the stored record, the request and vLLM's count are there.
5. restart:  `down` (volumes kept), `up --wait` again: the same record is still there.
6. outage:   storage stopped alone, 5 completions all answered, storage started again: all 5
             records arrive (the inference service spooled them).
7. down -v:  always, also after a failure (after printing the services' logs).

Not a pytest module (pytest would not collect this name either): run it with
`make test-compose` or `.venv/bin/python tests/compose/run_compose_stack.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai

from actlog.client import StorageClient
from actlog.launcher import grpc_serving
from actlog_common.hashing import prompt_hash

ROOT = Path(__file__).resolve().parents[2]
GPU_FILES = ("docker-compose.yml",)
CPU_FILES = ("docker-compose.yml", "docker-compose.cpu.yml")
SERVICES = ("storage", "inference", "gateway")
WHEELS_DIR = ROOT / "docker" / "wheels"
DEFAULT_MODEL_DIR = "SmolLM2-135M-Instruct"
OUTAGE_PROMPTS = 5

TIMINGS: list[tuple[str, float]] = []
RESULTS: list[tuple[str, bool]] = []


def log(message: str) -> None:
    print(f"[compose-test] {message}", flush=True)


@contextmanager
def phase(name: str) -> Iterator[None]:
    log(f"--- {name}")
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        elapsed = time.monotonic() - start
        TIMINGS.append((name, elapsed))
        RESULTS.append((name, ok))
        log(f"--- {name}: {'ok' if ok else 'FAILED'} in {elapsed:.1f} s")


class Compose:
    def __init__(self, project: str, files: tuple[str, ...], env: dict[str, str]) -> None:
        self.project = project
        self.files = files
        self.env = env

    def argv(self, *args: str) -> list[str]:
        argv = ["docker", "compose", "-p", self.project]
        for name in self.files:
            argv += ["-f", str(ROOT / name)]
        return argv + list(args)

    def run(self, *args: str, timeout: float = 1800, capture: bool = False) -> str:
        argv = self.argv(*args)
        log("$ " + shlex.join(argv[2:]))
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=self.env,
            timeout=timeout,
            check=False,
            text=True,
            stdout=subprocess.PIPE if capture else None,
        )
        if done.returncode != 0:
            raise RuntimeError(f"`{shlex.join(argv)}` exited with {done.returncode}")
        return done.stdout or ""


def engine_answers(env: dict[str, str]) -> str | None:
    try:
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def pip_find_links() -> list[Path]:
    """Local directories pip is configured to find wheels in (config files and PIP_FIND_LINKS)."""
    values = [os.environ.get("PIP_FIND_LINKS", "")]
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            values.append(value.strip().strip("'\""))
    dirs = []
    for value in values:
        for item in value.split():
            path = Path(item.removeprefix("file://"))
            if path.is_dir() and path not in dirs:
                dirs.append(path)
    return dirs


def stage_torch_wheels(env: dict[str, str]) -> None:
    """Link CPU torch wheels from pip's find-links into docker/wheels, the build context's
    wheel directory; then the build needs no PyTorch index (TORCH_INDEX_URL empty)."""
    if "TORCH_INDEX_URL" in env:
        log(f"TORCH_INDEX_URL set by the caller ({env['TORCH_INDEX_URL']!r}): not staging wheels")
        return
    staged = []
    for directory in pip_find_links():
        for wheel in sorted(directory.glob("torch-*+cpu-cp311-*.whl")):
            target = WHEELS_DIR / wheel.name
            if not target.exists() or target.stat().st_size != wheel.stat().st_size:
                target.unlink(missing_ok=True)
                try:
                    os.link(wheel, target)
                except OSError:
                    import shutil

                    shutil.copyfile(wheel, target)
            staged.append(wheel.name)
    if staged:
        env["TORCH_INDEX_URL"] = ""
        log(f"torch from the build context: {', '.join(staged)} (TORCH_INDEX_URL empty)")
    else:
        log("no local CPU torch wheel: the build uses PyTorch's CPU index")


def free_port(preferred: int) -> int:
    """`preferred` if nothing on this host listens there, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def scrape_metrics(url: str) -> dict[str, float]:
    """A /metrics page parsed with prometheus_client: each sample name's total."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 (loopback)
        text = reply.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def image_sizes(compose: Compose) -> None:
    config = json.loads(compose.run("config", "--format", "json", capture=True))
    for name in SERVICES:
        image = config["services"][name]["image"]
        done = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", image],
            env=compose.env,
            capture_output=True,
            text=True,
            check=False,
        )
        size = int(done.stdout.strip() or 0)
        log(f"image {image}: {size / 1e6:.0f} MB")


def wait_serving(address: str, timeout: float = 120) -> None:
    """Until the gRPC health service at `address` says SERVING (through the published port)."""
    deadline = time.monotonic() + timeout
    while not grpc_serving(address):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} not serving after {timeout:.0f} s")
        time.sleep(0.5)


def model_shape(compose: Compose) -> tuple[int, int]:
    """(hidden_size, num_hidden_layers) of the default model, read inside the container."""
    code = (
        "import json, os; c = json.load(open(os.path.join(os.environ['MODEL_CACHE_DIR'], "
        f"'{DEFAULT_MODEL_DIR}', 'config.json'))); "
        "print(c['hidden_size'], c['num_hidden_layers'])"
    )
    out = compose.run("exec", "-T", "inference", "python", "-c", code, capture=True)
    hidden, layers = (int(x) for x in out.split())
    return hidden, layers


def complete(client: openai.OpenAI, model: str, prompt: str) -> openai.types.Completion:
    reply = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
    check(bool(reply.choices) and reply.choices[0].text != "", f"empty completion for {prompt!r}")
    return reply


def http_get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - a local URL
        return reply.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="actlog-compose-test", help="compose project name")
    parser.add_argument("--wait-timeout", type=int, default=1200, help="seconds for up --wait")
    parser.add_argument("--keep", action="store_true", help="leave the stack and volumes up")
    args = parser.parse_args()

    env = dict(os.environ)
    server = engine_answers(env)
    if server is None:
        log(
            f"no container engine answers (DOCKER_HOST={env.get('DOCKER_HOST', 'unset')}). "
            'On Debian, as root: eval "$(bash docker/engine-setup.sh)"'
        )
        return 1
    log(f"engine: {server}")

    gateway_port = free_port(8000)
    storage_port = free_port(50052)
    env["GATEWAY_PUBLISH_PORT"] = str(gateway_port)
    env["STORAGE_PUBLISH_PORT"] = str(storage_port)
    metrics_ports = {
        "gateway": gateway_port,
        "inference": free_port(9051),
        "storage": free_port(9052),
    }
    env["INFERENCE_METRICS_PUBLISH_PORT"] = str(metrics_ports["inference"])
    env["STORAGE_METRICS_PUBLISH_PORT"] = str(metrics_ports["storage"])
    cpu = Compose(args.project, CPU_FILES, env)
    gpu = Compose(args.project, GPU_FILES, env)
    nonce = uuid.uuid4().hex[:8]
    prompt = f"[{nonce}] The capital of France is"
    up_count = 0

    try:
        with phase("config"):
            gpu.run("config", "-q")
            cpu.run("config", "-q")

        with phase("build"):
            stage_torch_wheels(env)
            cpu.run("build")
        image_sizes(cpu)

        with phase("up --wait"):
            cpu.run("up", "-d", "--wait", "--wait-timeout", str(args.wait_timeout))
            up_count += 1

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{gateway_port}/v1",
            api_key="unused",
            max_retries=0,
            timeout=300,
        )
        storage_addr = f"127.0.0.1:{storage_port}"

        with phase("capture"):
            model = client.models.list().data[0].id
            log(f"served model: {model}")
            reply = complete(client, model, prompt)
            hidden, layers = model_shape(cpu)
            with StorageClient(storage_addr) as storage:
                record = storage.wait_for_record(prompt_hash(prompt), 1, timeout=120)[0]
                acts = storage.get_activations(record.record_id)
                # Storage's container has a /dev/shm of its own: the read fell back.
                transport = storage.activation_transport
                feats = storage.features([record.record_id], pooling="last_prompt")
            check(transport == "stream", f"a containerized storage read over {transport}")
            usage = reply.usage
            rows = usage.prompt_tokens + usage.completion_tokens - 1
            check(list(acts) == [layers], f"layers {list(acts)}, wanted the last ({layers})")
            shape = acts[layers].shape
            check(shape == (rows, hidden), f"activations {shape}, wanted {(rows, hidden)}")
            log(f"record {record.record_id}: {reply.choices[0].text!r}, activations {shape}")
            last_prompt = acts[layers][record.prompt_length - 1]
            check(bool((feats[layers][0] == last_prompt).all()), "features differ from the rows")
            # On CPU the defaults run eagerly (any layer), and say so.
            health = json.loads(http_get(f"http://127.0.0.1:{gateway_port}/health"))["inference"]
            path, why = health["capture_path"], health["capture_path_reason"]
            check(path == "eager" and "ENFORCE_EAGER=auto" in why, f"capture path {path} ({why})")

        with phase("metrics"):
            for service, port in metrics_ports.items():
                samples = scrape_metrics(f"http://127.0.0.1:{port}/metrics")
                log(f"{service} /metrics: {len(samples)} samples")
            stored = scrape_metrics(f"http://127.0.0.1:{metrics_ports['storage']}/metrics")
            check(stored.get("actlog_storage_complete_records", 0) >= 1, "no stored record counted")
            served = scrape_metrics(f"http://127.0.0.1:{gateway_port}/metrics")
            check(served.get("actlog_gateway_requests_total", 0) >= 1, "no request counted")
            engine = scrape_metrics(f"http://127.0.0.1:{metrics_ports['inference']}/metrics")
            check(engine.get("vllm:request_success_total", 0) >= 1, "vLLM counted no request")

        with phase("down, up: record kept"):
            cpu.run("down")
            cpu.run("up", "-d", "--wait", "--wait-timeout", str(args.wait_timeout))
            with StorageClient(storage_addr) as storage:
                again = storage.wait_for_record(prompt_hash(prompt), 1, timeout=60)
            check(
                [r.record_id for r in again] == [record.record_id],
                f"after restart: {[r.record_id for r in again]}, wanted {record.record_id}",
            )

        with phase("storage outage"):
            prompts = [f"[{nonce}] Outage {i}: the sky is" for i in range(OUTAGE_PROMPTS)]
            cpu.run("stop", "storage")
            for text in prompts:
                complete(client, model, text)
            log(f"{len(prompts)} completions answered while storage was stopped")
            cpu.run("start", "storage")
            wait_serving(storage_addr)
            with StorageClient(storage_addr) as storage:
                for text in prompts:
                    storage.wait_for_record(prompt_hash(text), 1, timeout=180)
            log(f"all {len(prompts)} records arrived after storage came back")
    except Exception as exc:  # report, print the logs, clean up, fail
        log(f"FAILED: {type(exc).__name__}: {exc}")
        if up_count:
            try:
                cpu.run("ps", "-a")
                cpu.run("logs", "--no-color", "--tail", "80")
            except (RuntimeError, subprocess.TimeoutExpired) as logs_error:
                log(f"could not print logs: {logs_error}")
        if not RESULTS or RESULTS[-1][1]:
            RESULTS.append((f"error: {type(exc).__name__}", False))
    finally:
        if not args.keep:
            try:
                with phase("down -v"):
                    cpu.run("down", "-v", "--remove-orphans")
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"down -v failed: {exc}")

    log("wall time per phase:")
    for name, seconds in TIMINGS:
        log(f"  {name:<24} {seconds:7.1f} s")
    passed = sum(ok for _, ok in RESULTS)
    failed = len(RESULTS) - passed
    print(f"compose: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
