"""`python -m storage_service` as a child process, on the port it binds itself.

It binds port 0 and the port it got is read from its log, so no other process can take a
port between a test choosing it and the service binding it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actlog_common.grpc_security import GrpcSecurity

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
LISTENING = re.compile(rb"storage listening on \S+:(\d+) ")


class StorageProcess:
    """`python -m storage_service` as a child process; `address` once started."""

    def __init__(
        self,
        lmdb_path: Path,
        log_path: Path,
        *extra_args: str,
        security: GrpcSecurity | None = None,
    ) -> None:
        self.lmdb_path = lmdb_path
        self.security = security or GrpcSecurity()
        self.log_path = log_path
        self.extra_args = extra_args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, port: int | None = None) -> StorageProcess:
        """Start on `port` (by default one the service picks, read from its log)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        args = [
            sys.executable,
            "-m",
            "storage_service",
            "--storage-port",
            str(port or 0),
            "--storage-metrics-port",
            "0",  # off: tests/e2e/test_metrics.py scrapes it
            "--activation-lmdb-path",
            str(self.lmdb_path),
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=log, stderr=log)
        self.port = self._bound_port(offset)
        self._wait_serving()
        return self

    def _bound_port(self, offset: int) -> int:
        """The port this start's "storage listening on" line names."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                found = LISTENING.search(log.read())
            if found:
                return int(found[1])
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"storage exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"storage did not say its port after {START_TIMEOUT_S} s:\n{self.log()}")

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.security.channel(self.address) as channel:
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
