"""A real storage service process on a free port, with its LMDB in a temporary directory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actlog.launcher import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


class StorageProcess:
    """`python -m storage_service` as a child process; `address` once started."""

    def __init__(self, lmdb_path: Path, log_path: Path, *extra_args: str) -> None:
        self.lmdb_path = lmdb_path
        self.log_path = log_path
        self.extra_args = extra_args
        self.port = 0
        self.metrics_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, port: int | None = None) -> StorageProcess:
        """Start on `port` (a free one by default)."""
        self.port = port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        args = [
            sys.executable,
            "-m",
            "storage_service",
            "--storage-port",
            str(self.port),
            "--storage-metrics-port",
            str(self.metrics_port),
            "--activation-lmdb-path",
            str(self.lmdb_path),
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=log, stderr=log)
        self._wait_serving()
        return self

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    pytest.fail(f"storage exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    reply = health.Check(
                        health_pb2.HealthCheckRequest(service="actlog.v1.Storage"), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"storage not SERVING after {START_TIMEOUT_S} s:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL after `timeout`); the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_storage(tmp_path: Path) -> Iterator:
    """Factory: start_storage(lmdb_path=None, *extra_args) -> a started StorageProcess."""
    started: list[StorageProcess] = []

    def start(lmdb_path: Path | None = None, *extra_args: str) -> StorageProcess:
        path = lmdb_path or tmp_path / f"lmdb{len(started)}"
        process = StorageProcess(path, tmp_path / f"storage{len(started)}.log", *extra_args)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        if process.alive():
            process.stop()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageProcess]:
    """One storage process shared by a test module."""
    directory = tmp_path_factory.mktemp("storage")
    process = StorageProcess(directory / "lmdb", directory / "storage.log").start()
    yield process
    code = process.stop()
    assert code == 0, f"storage exited with {code}:\n{process.log()}"
    assert "Traceback" not in process.log(), "unexpected server error:\n" + process.log()
