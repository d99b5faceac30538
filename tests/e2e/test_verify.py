"""The original project's verification script, and `actlog verify`, against a running stack:
they pass when a completion's activations reach storage and fail with the reason when not."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from actlog_common.v1 import inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
ACTLOG = Path(sys.executable).parent / "actlog"


def spooled(stack) -> int:
    with grpc.insecure_channel(stack.config.inference_addr) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        return stub.GetStatus(inference_pb2.StatusRequest()).spool_records


def run_script(stack, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "activation_logging" / "test_lmdb_logging.py"),
         "--server", stack.config.gateway_url, "--storage-addr", stack.config.storage_addr, *extra],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip


def test_the_script_finds_its_record_and_prints_what_was_logged(stack, served_model) -> None:
    result = run_script(stack, "--model", served_model, "--auth_token", "hf_not_a_real_token")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "prompt:   'The capital of France is'" in out and f"model:    {served_model}" in out
    assert "layer 30: shape (" in out and out.rstrip().endswith("OK: activations were logged")
    assert "hf_not_a_real_token" not in out


def test_actlog_verify_is_the_same_check(stack) -> None:
    result = subprocess.run(
        [str(ACTLOG), "verify", "--server", stack.config.gateway_url, "--storage-addr",
         stack.config.storage_addr],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "OK: activations were logged" in result.stdout


def test_with_storage_stopped_it_fails_and_says_why(stack, storage) -> None:
    stack.stop_service("storage")
    try:
        result = run_script(stack)
    finally:
        stack.start_service("storage")
    stack.wait_healthy(timeout=60, names=("storage",))
    # The check's capture waited in the spool: let it reach storage before the next test
    # counts records.
    deadline = time.monotonic() + 60
    while spooled(stack):
        assert time.monotonic() < deadline, "the spool drains once storage is back"
        time.sleep(0.5)
    assert result.returncode == 1
    assert (
        result.stderr.startswith("FAILED: record ") and stack.config.storage_addr in result.stderr
    )
    assert "Traceback" not in result.stderr
