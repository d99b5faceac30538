"""Runs storage, inference and gateway as local processes and waits until all are healthy.

Each service reads its own settings from environment variables; the launcher passes the
configuration down the same way, so the names here, in the services and in the compose file
are one set.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actlog_common import defaults
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.ids import is_record_id
from actlog_common.parent import launcher_env
from actlog_common.v1 import inference_pb2, inference_pb2_grpc

logger = logging.getLogger(__name__)


# What huggingface_hub reads as the hub token: given to the inference service only.
HUB_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def setting(default: Any, help: str, env: str | None = None) -> Any:
    """A StackConfig field: its default, its help, and the environment variable that sets it
    (for `actlog up`) and that the launcher passes to the services (default: the field's
    name in capitals, the name the services' settings read)."""
    return field(default=default, metadata={"help": help, "env": env})


def env_name(f: Field[Any]) -> str:
    return f.metadata.get("env") or f.name.upper()


@dataclass
class StackConfig:
    """What `actlog up` takes (each field is an option and an environment variable of the same
    name) and what the launcher passes down to the services."""

    gateway_host: str = setting("127.0.0.1", "address the gateway binds")
    gateway_port: int = setting(defaults.GATEWAY_PORT, "the gateway's HTTP port")
    inference_host: str = setting("127.0.0.1", "address the inference service binds")
    inference_port: int = setting(defaults.INFERENCE_PORT, "the inference service's gRPC port")
    inference_metrics_port: int = setting(
        defaults.INFERENCE_METRICS_PORT, "the inference service's Prometheus port"
    )
    storage_host: str = setting("127.0.0.1", "address the storage service binds")
    storage_port: int = setting(defaults.STORAGE_PORT, "the storage service's gRPC port")
    storage_metrics_port: int = setting(
        defaults.STORAGE_METRICS_PORT, "the storage service's Prometheus port"
    )
    activation_lmdb_path: str = setting(defaults.ACTIVATION_LMDB_PATH, "the records' LMDB")
    capture_spool_dir: str = setting(defaults.CAPTURE_SPOOL_DIR, "captures waiting for storage")
    model: str = setting("default", "`default`, a local HF directory or a hub id")
    dtype: str = setting(
        "auto",
        "the dtype the engine computes in: auto (CPU: float32, or bfloat16 where the CPU "
        "computes it natively; CUDA: the checkpoint's), bfloat16, float16 or float32",
    )
    enforce_eager: str = setting(
        "auto", "true: eager, any layer; false: compiled; auto: eager on CPU, compiled on CUDA"
    )
    capture_layers_available: str = setting(
        "last", "what a compiled engine can capture (all, recommended, indices), fixed at start"
    )
    capture_dtype: str = setting(
        "auto", "the dtype rows are stored in: auto (as computed), float32, float16, bfloat16"
    )
    # Each service's log goes to <log_dir>/<service>.log; None = this process's terminal.
    log_dir: str | None = setting("logs", "each service logs to <dir>/<name>.log", "ACTLOG_LOG_DIR")
    # One file for every service's log instead (the original server's --log-file).
    log_file: str | None = setting(
        None, "every service appends its log to this one file instead", "ACTLOG_LOG_FILE"
    )
    # Further variables for the services (e.g. MAX_MODEL_LEN, VLLM_CPU_KVCACHE_SPACE);
    # an empty value removes the variable.
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def options(cls) -> list[Field[Any]]:
        """The fields `actlog up` takes as options (all but extra_env)."""
        return [f for f in fields(cls) if "help" in f.metadata]

    @classmethod
    def on_free_ports(cls, directory: Path, **settings: Any) -> StackConfig:
        """A stack for tests and benchmarks: every port free now, its records, spool and logs
        under `directory`; `settings` set the other fields (dtype, extra_env...)."""
        return cls(
            gateway_port=free_port(),
            inference_port=free_port(),
            storage_port=free_port(),
            inference_metrics_port=free_port(),
            storage_metrics_port=free_port(),
            activation_lmdb_path=str(directory / "activations.lmdb"),
            capture_spool_dir=str(directory / "spool"),
            log_dir=str(directory / "logs"),
            **settings,
        )

    @classmethod
    def from_env(cls, **settings: Any) -> StackConfig:
        """Each option from its environment variable where set (as `actlog up` reads them),
        `settings` over them."""
        found: dict[str, Any] = {}
        for f in cls.options():
            value = os.environ.get(env_name(f))
            if value is not None:
                found[f.name] = int(value) if isinstance(f.default, int) else value
        return cls(**{**found, **settings})

    @property
    def storage_addr(self) -> str:
        return f"{self.storage_host}:{self.storage_port}"

    @property
    def inference_addr(self) -> str:
        return f"{self.inference_host}:{self.inference_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"


def free_port() -> int:
    """A TCP port free on loopback right now (tests and benchmarks start services on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def grpc_serving(address: str, timeout: float = 2.0, security: GrpcSecurity | None = None) -> bool:
    try:
        with (security or GrpcSecurity.from_env()).channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def inference_model_info(
    address: str, timeout: float = 5.0, security: GrpcSecurity | None = None
) -> inference_pb2.ModelInfo:
    """The served model as the inference service describes it (name, dtype, KV cache)."""
    with (security or GrpcSecurity.from_env()).channel(address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        return stub.GetModelInfo(inference_pb2.ModelInfoRequest(), timeout=timeout)


def spooled_records(spool_dir: Path) -> int:
    """Finished captures waiting in an inference service's spool (one directory each, named
    by its record id; captures still arriving have a suffix)."""
    if not spool_dir.is_dir():
        return 0
    return sum(1 for p in spool_dir.iterdir() if p.is_dir() and is_record_id(p.name))


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 (loopback)
            return reply.status == 200
    except OSError:
        return False


class ServiceExited(RuntimeError):
    """A service process ended while the launcher waited for it to be ready."""


class Stack:
    """The three services as child processes."""

    SERVICES = ("storage", "inference", "gateway")

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list = []

    def _env(self) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        for f in StackConfig.options():
            if f.name not in ("log_dir", "log_file"):  # the launcher's own: it opens the logs
                env[env_name(f)] = str(getattr(c, f.name))
        env.update(
            {
                "STORAGE_ADDR": c.storage_addr,
                "INFERENCE_ADDR": c.inference_addr,
                # vLLM's own log noise (Triton, LD_PRELOAD hints) drowns ours otherwise.
                "VLLM_LOGGING_LEVEL": env.get("VLLM_LOGGING_LEVEL", "WARNING"),
            }
        )
        for key, value in c.extra_env.items():
            # An empty value unsets: some tools (vLLM among them) choke on empty variables.
            if value:
                env[key] = value
            else:
                env.pop(key, None)
        return env

    def start_service(self, name: str) -> subprocess.Popen[bytes]:
        module = {
            "storage": "storage_service",
            "inference": "inference_service",
            "gateway": "gateway",
        }[name]
        out = None
        path = self.log_path(name)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = open(path, "ab")  # noqa: SIM115 (closed in stop)
            self._logs.append(out)
        env = {**self._env(), **launcher_env()}
        if name != "inference":
            # The hub token downloads a gated model; no other service has a use for it.
            for key in HUB_TOKEN_VARIABLES:
                env.pop(key, None)
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            # The services stop when this process dies, even by SIGKILL (actlog_common.parent).
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            # A process group of its own: a Ctrl-C in the terminal reaches the launcher only,
            # which then stops the services in order (stop()), instead of all at once.
            process_group=0,
        )
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        for name in self.SERVICES:
            self.start_service(name)

    @property
    def security(self) -> GrpcSecurity:
        """How to reach the services' gRPC ports: the GRPC_TLS_* / GRPC_AUTH_TOKEN they get."""
        return GrpcSecurity.from_env(self._env())

    def log_path(self, name: str) -> Path | None:
        if self.config.log_file:
            return Path(self.config.log_file)
        return Path(self.config.log_dir) / f"{name}.log" if self.config.log_dir else None

    @property
    def log_location(self) -> Path:
        """Where the services log: the one log file, or the logs directory."""
        return Path(self.config.log_file or self.config.log_dir or ".").resolve()

    def log_tail(self, name: str, lines: int = 1) -> str:
        """The last `lines` non-empty lines of a service's log ("" without a log file)."""
        path = self.log_path(name)
        if path is None or not path.is_file():
            return ""
        with path.open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 16384, 0))
            text = f.read().decode(errors="replace")
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    def healthy(self, name: str) -> bool:
        """Ready: the gRPC health service says SERVING (inference: its model is loaded);
        the gateway's readiness path answers 200 (it can serve a completion)."""
        c = self.config
        if name == "storage":
            return grpc_serving(c.storage_addr, security=self.security)
        if name == "inference":
            return grpc_serving(c.inference_addr, security=self.security)
        return http_ok(f"{c.gateway_url}/health")

    def wait_healthy(
        self,
        timeout: float = 600.0,
        names: tuple[str, ...] | None = None,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names or self.SERVICES)
        while waiting:
            for name in waiting:
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is not None:
                    last = self.log_tail(name)
                    raise ServiceExited(
                        f"{name} exited with code {proc.returncode} while starting"
                        + (f": {last}" if last else "")
                    )
            # In start order: the gateway is ready only once inference is.
            while waiting and self.healthy(waiting[0]):
                name = waiting.pop(0)
                if on_ready is not None:
                    on_ready(name)
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout:.0f}s: {', '.join(waiting)}")
            if waiting:
                time.sleep(0.5)

    # How long each service may take to stop: inference hands its pending captures to storage.

    def stop_service(self, name: str, timeout: float | None = None, kill: bool = False) -> None:
        timeout = timeout or defaults.STOP_TIMEOUT_S[name]
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0fs; killing it", name, timeout)
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Gateway first (no new requests), then inference, which hands its pending captures
        to storage before it exits, then storage."""
        for name in reversed(self.SERVICES):
            self.stop_service(name)
        for handle in self._logs:
            handle.close()
        self._logs.clear()
