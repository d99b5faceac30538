"""`actlog up` as a user runs it, on a bf16 engine: capture matches transformers in bf16,
`actlog export` writes the record to safetensors, and Ctrl-C stops all three services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import openai
import pytest

from actlog.client import StorageClient
from actlog.hashing import prompt_hash
from actlog.launcher import grpc_serving, http_ok
from tests.conftest import ENGINE_ENV, free_port
from tests.reference import load_reference, record_mismatches

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def bf16_stack(tmp_path_factory, model_dir):
    tmp = tmp_path_factory.mktemp("bf16")
    ports = {"gateway": free_port(), "inference": free_port(), "storage": free_port()}
    cmd = [
        sys.executable,
        "-m",
        "actlog.cli",
        "up",
        "--gateway-port",
        str(ports["gateway"]),
        "--inference-port",
        str(ports["inference"]),
        "--storage-port",
        str(ports["storage"]),
        "--activation-lmdb-path",
        str(tmp / "db"),
        "--dtype",
        "bfloat16",
        "--log-dir",
        str(tmp / "logs"),
    ]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **ENGINE_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner = []
    deadline = time.monotonic() + 900
    assert proc.stdout is not None
    for line in proc.stdout:
        banner.append(line)
        if "Press Ctrl-C" in line or time.monotonic() > deadline:
            break
    if proc.poll() is not None or "Press Ctrl-C" not in "".join(banner):
        proc.kill()
        logs = "".join(p.read_text()[-3000:] for p in (tmp / "logs").glob("*.log"))
        pytest.fail(f"actlog up did not come up:\n{''.join(banner)}\n{logs}")
    yield proc, ports, "".join(banner), tmp
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_actlog_up_prints_where_each_service_listens(bf16_stack):
    _, ports, banner, _ = bf16_stack
    for port in ports.values():
        assert f"127.0.0.1:{port}" in banner


def test_bf16_capture_matches_transformers_and_exports(bf16_stack, model_dir):
    _, ports, _, tmp = bf16_stack
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{ports['gateway']}/v1", api_key="k", max_retries=0, timeout=300
    )
    model = client.models.list().data[0].id
    prompt = "Explain in one sentence why the sky is blue."
    reply = client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=12,
        temperature=0,
        extra_body={"capture_layers": [0, 10, 20, -1]},
    )
    storage_addr = f"127.0.0.1:{ports['storage']}"
    with StorageClient(storage_addr) as storage:
        [record] = storage.wait_for_record(prompt_hash(prompt), timeout=120)
        activations = storage.get_activations(record.record_id)
    assert record.dtype == "bfloat16"
    assert record.num_positions == record.prompt_length + reply.usage.completion_tokens - 1
    reference = load_reference(model_dir, "bfloat16")
    assert (
        record_mismatches(activations, list(record.token_ids), record.num_positions, reference)
        == []
    )

    out = tmp / "record.safetensors"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "actlog.cli",
            "export",
            "--prompt-hash",
            prompt_hash(prompt),
            "--output",
            str(out),
            "--layers",
            "0,-1",
            "--storage",
            storage_addr,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    import torch
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        names = set(f.keys())
        meta = f.metadata()
        assert names == {"layer_0", f"layer_{record.num_layers}", "token_ids"}
        last = f.get_tensor(f"layer_{record.num_layers}")
        assert last.dtype == torch.bfloat16, "stored dtype is kept"
        assert last.shape == (record.num_positions, record.hidden_size)
        np.testing.assert_array_equal(last.float().numpy(), activations[record.num_layers])
        assert f.get_tensor("token_ids").tolist() == list(record.token_ids)
    assert meta["prompt"] == prompt
    assert meta["response"] == reply.choices[0].text
    assert meta["model"] == model
    assert int(meta["prompt_length"]) == record.prompt_length
    assert json.loads(meta["layers"]) == [0, record.num_layers]


def test_ctrl_c_stops_all_three_services(bf16_stack):
    proc, ports, _, _ = bf16_stack
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0
    assert not http_ok(f"http://127.0.0.1:{ports['gateway']}/health", timeout=1)
    assert not grpc_serving(f"127.0.0.1:{ports['inference']}", timeout=1)
    assert not grpc_serving(f"127.0.0.1:{ports['storage']}", timeout=1)
