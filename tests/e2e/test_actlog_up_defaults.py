"""`actlog up` as a new user runs it: the README's path with the shipped defaults (only ports
given, data in the working directory). On CPU the engine computes in the dtype the machine's
rule picks (float32 unless the CPU computes bfloat16 natively) and captures eagerly, any layer,
and says why in the banner and /health. It comes up and says where everything is, capture
matches transformers in that dtype, `actlog export-record` writes the record to safetensors,
and Ctrl-C stops every process it started."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import psutil
import pytest

from actlog.client import StorageClient
from actlog.launcher import Stack, free_port, grpc_serving, http_ok, spooled_records
from actlog_common.hashing import prompt_hash
from gateway.config import GatewaySettings
from inference_service.config import InferenceSettings
from inference_service.machine import Machine, choose_dtype, choose_enforce_eager
from storage_service.config import StorageSettings
from tests.e2e.helpers import banner_of
from tests.reference import load_reference, record_mismatches

pytestmark = pytest.mark.vllm

# What the rule picks on this machine (the e2e tiers run vLLM's CPU backend).
THIS_CPU = Machine.detect("cpu")
DEFAULT_DTYPE = choose_dtype("auto", THIS_CPU)
DEFAULT_EAGER = choose_enforce_eager("auto", THIS_CPU)

ACTLOG = Path(sys.executable).with_name("actlog")
PORT_FLAGS = {
    "gateway": "--gateway-port",
    "inference": "--inference-port",
    "inference_metrics": "--inference-metrics-port",
    "storage": "--storage-port",
    "storage_metrics": "--storage-metrics-port",
}


def new_user_env() -> dict[str, str]:
    """This process's environment without any setting of the stack or of vLLM: what a new
    user's shell has."""
    ours = set()
    for settings in (GatewaySettings, InferenceSettings, StorageSettings):
        ours |= {name.upper() for name in settings.model_fields}
    return {k: v for k, v in os.environ.items() if k not in ours and not k.startswith("VLLM_")}


def start_actlog_up(cwd: Path, ports: dict[str, int], env: dict[str, str]) -> subprocess.Popen:
    args = [str(ACTLOG), "up"]
    for name, flag in PORT_FLAGS.items():
        args += [flag, str(ports[name])]
    # Its own session, so a Ctrl-C reaches its whole process group, as in a terminal.
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory, model_dir):
    cwd = tmp_path_factory.mktemp("new-user")
    ports = {name: free_port() for name in PORT_FLAGS}
    proc = start_actlog_up(cwd, ports, new_user_env())
    banner = banner_of(proc, [cwd / "logs" / f"{name}.log" for name in Stack.SERVICES])
    yield proc, ports, banner, cwd
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_actlog_up_says_where_everything_is(default_stack):
    _, ports, banner, cwd = default_stack
    assert re.search(r"actlog is up after \d+s", banner)
    for port in ports.values():
        assert f"127.0.0.1:{port}" in banner
    # Data paths are absolute, so the user finds them from any directory.
    for path in ("lmdb_data/activations.lmdb", "capture_spool", "logs"):
        assert str((cwd / path).resolve()) in banner
    # The services' own logs go to files, not to the terminal.
    assert "vLLM" not in banner and "WARNING" not in banner
    assert {p.name for p in (cwd / "logs").iterdir()} == {
        "storage.log", "inference.log", "gateway.log"
    }  # fmt: skip
    kv = re.search(r"KV cache (\d+\.\d+) GiB", banner)
    assert kv and 0 < float(kv.group(1)) <= 2.0, "sized from the engine's needs, capped"


def test_a_completion_with_the_openai_client(default_stack):
    _, ports, _, _ = default_stack
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{ports['gateway']}/v1", api_key="k", max_retries=0, timeout=300
    )
    reply = client.completions.create(
        model="SmolLM2-135M-Instruct", prompt="The capital of France is", max_tokens=4,
        temperature=0,
    )  # fmt: skip
    assert "Paris" in reply.choices[0].text
    assert reply.model_extra["activations"][0]["record_ids"]


def test_the_defaults_are_this_machines_rule_and_say_why(default_stack):
    _, ports, banner, _ = default_stack
    assert f"dtype      {DEFAULT_DTYPE.value}  [{DEFAULT_DTYPE.reason}]" in banner
    assert "capture    eager (forward hooks), any layer" in banner
    assert f"rows stored as {DEFAULT_DTYPE.value}" in banner and DEFAULT_EAGER.reason in banner
    health = httpx.get(f"http://127.0.0.1:{ports['gateway']}/health", timeout=10).json()
    inference = health["inference"]
    assert inference["dtype"] == inference["capture_dtype"] == DEFAULT_DTYPE.value
    assert inference["dtype_reason"] == DEFAULT_DTYPE.reason
    assert inference["capture_path"] == "eager"
    assert inference["capture_path_reason"] == DEFAULT_EAGER.reason
    assert "ENFORCE_EAGER=auto on CPU" in inference["capture_path_reason"]
    assert inference["available_layers"] == [] and inference["compile_mode"] == "NONE"


def test_default_capture_matches_transformers_and_exports(default_stack, model_dir):
    _, ports, _, tmp = default_stack
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
    assert record.dtype == DEFAULT_DTYPE.value
    assert record.num_positions == record.prompt_length + reply.usage.completion_tokens - 1
    reference = load_reference(model_dir, DEFAULT_DTYPE.value)
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
            "export-record",
            "--prompt-hash",
            prompt_hash(prompt),
            "--output",
            str(out),
            "--layers",
            "0,-1",
            "--storage-addr",
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
        assert last.dtype == getattr(torch, DEFAULT_DTYPE.value), "stored dtype is kept"
        assert last.shape == (record.num_positions, record.hidden_size)
        np.testing.assert_array_equal(last.float().numpy(), activations[record.num_layers])
        assert f.get_tensor("token_ids").tolist() == list(record.token_ids)
    assert meta["prompt"] == prompt
    assert meta["response"] == reply.choices[0].text
    assert meta["model"] == model
    assert int(meta["prompt_length"]) == record.prompt_length
    assert json.loads(meta["layers"]) == [0, record.num_layers]


def test_ctrl_c_stops_in_order_and_every_capture_reaches_storage(default_stack):
    """Ctrl-C reaches the launcher only (the services run in process groups of their own):
    it stops the gateway, then inference once it has handed its captures to storage, then
    storage, so nothing waits in the spool; then every process is gone."""
    proc, ports, _, cwd = default_stack
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports['gateway']}/v1", api_key="k",
                           max_retries=0, timeout=300)  # fmt: skip
    prompts = [f"Captured just before Ctrl-C {i}:" for i in range(6)]

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(base_url=str(client.base_url), api_key="k",
                                      max_retries=0, timeout=300) as aclient:  # fmt: skip
            replies = await asyncio.gather(*(
                aclient.completions.create(model="SmolLM2-135M-Instruct", prompt=p,
                                           max_tokens=24, extra_body={"capture_layers": "all"})
                for p in prompts
            ))  # fmt: skip
        return [r.model_extra["activations"][0]["record_ids"][0] for r in replies]

    record_ids = asyncio.run(burst())
    started = psutil.Process(proc.pid).children(recursive=True)
    assert len(started) >= 4, "storage, inference (and its engine core), gateway"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert proc.wait(timeout=180) == 0
    assert proc.stdout is not None
    said = proc.stdout.read()
    assert "stopped; records in" in said and "wait in" not in said, said
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, f"still running after Ctrl-C: {[p.pid for p in alive]}"
    assert not http_ok(f"http://127.0.0.1:{ports['gateway']}/health/live", timeout=1)
    assert not grpc_serving(f"127.0.0.1:{ports['inference']}", timeout=1)
    assert not grpc_serving(f"127.0.0.1:{ports['storage']}", timeout=1)
    # Nothing stayed behind in the spool; storage holds every record, complete.
    assert spooled_records(cwd / "capture_spool") == 0
    storage = subprocess.Popen(
        [sys.executable, "-m", "storage_service", "--storage-port", str(ports["storage"]),
         "--storage-metrics-port", "0", "--activation-lmdb-path",
         str(cwd / "lmdb_data" / "activations.lmdb")],
    )  # fmt: skip
    try:
        with StorageClient(f"127.0.0.1:{ports['storage']}") as reader:
            deadline = time.monotonic() + 60
            while not grpc_serving(reader.address, timeout=1):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            for record_id in record_ids:
                assert reader.get_record(record_id).is_complete
    finally:
        storage.terminate()
        storage.wait(30)


def test_too_little_memory_is_one_clear_line(tmp_path):
    """When the engine cannot fit, `actlog up` ends with one line saying what was wanted,
    what is free and which setting to change, not with tracebacks from three processes."""
    env = {**new_user_env(), "KV_CACHE_MEMORY_BYTES": str(1 << 50)}
    ports = {name: free_port() for name in PORT_FLAGS}
    proc = start_actlog_up(tmp_path, ports, env)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    line = next(x for x in out.splitlines() if "did not come up" in x)
    assert "inference exited with code 1 while starting" in line
    assert re.search(r"wants \d+\.\d+ GiB .* and \d+\.\d+ GiB is free", line), line
    assert "KV_CACHE_MEMORY_BYTES" in line
    log = (tmp_path / "logs" / "inference.log").read_text()
    assert "Traceback" not in log
