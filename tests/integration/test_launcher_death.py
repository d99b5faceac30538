"""A launcher killed outright (SIGKILL: no handler runs) takes its services with it: each
got SIGTERM, stopped gracefully, and its port is free again; a record written before is
still there when storage starts again on the same LMDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import psutil

from actlog.client import StorageClient
from actlog.launcher import free_port
from actlog_common.v1 import storage_pb2_grpc
from storage_service.testing import synthetic_record
from tests.integration.storage_process import StorageProcess

GRACE_S = 20

LAUNCHER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from actlog.launcher import Stack, StackConfig, http_ok
    tmp = Path(sys.argv[1])
    stack = Stack(StackConfig.on_free_ports(tmp))
    for name in ("storage", "gateway"):
        stack.start_service(name)
    # The gateway is ready only once inference is: its liveness is what can be seen here.
    stack.wait_healthy(timeout=120, names=("storage",))
    deadline = time.monotonic() + 120
    while not http_ok(stack.config.gateway_url + "/health/live"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    print(json.dumps({"pids": [p.pid for p in stack.procs.values()],
                      "storage": stack.config.storage_addr}), flush=True)
    time.sleep(3600)
    """
)


def test_services_stop_when_their_launcher_is_killed(tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        started = json.loads(launcher.stdout.readline())
        record = synthetic_record("written before the launcher died")
        with grpc.insecure_channel(started["storage"]) as channel:
            storage_pb2_grpc.StorageStub(channel).Ingest(iter(record.requests()), timeout=30)
        services = [psutil.Process(pid) for pid in started["pids"]]
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(10)
        _, alive = psutil.wait_procs(services, timeout=GRACE_S)
        assert not alive, f"still running {GRACE_S} s after the launcher died: {alive}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
    # Stopped through their graceful path, on SIGTERM.
    log = (tmp_path / "logs" / "storage.log").read_text()
    assert "received SIGTERM, shutting down" in log, log[-2000:]
    again = StorageProcess(tmp_path / "activations.lmdb", tmp_path / "again.log").start(
        port=free_port()
    )
    try:
        with StorageClient(again.address) as client:
            assert client.get_record(record.header.record_id).is_complete
    finally:
        again.stop()
