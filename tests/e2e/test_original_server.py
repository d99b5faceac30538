"""The original activation-logging server's commands, typed as its README and its current
version write them, on the default model: `python -m activation_logging.vllm_serve` with its
flags starts the whole stack, `uvicorn activation_logging.server:app` serves it (attaching to
what runs, starting what does not), `run_test` checks it from Python, and the benchmark's seed
command with a model the stack does not serve stops before its first request. The hub token
given with --auth_token reaches the inference service's environment only: it is in no
process's arguments, no record, no spool file and no log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from actlog.client import StorageClient
from actlog.launcher import free_port, grpc_serving
from actlog_common.hashing import prompt_hash
from actlog_common.layers import LayerSpec
from tests.conftest import ENGINE_ENV
from tests.e2e.helpers import banner_of, scrape, total

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_NEVER-STORE-" + "9c1e7a"
NUM_LAYERS = 30


def service_env(tmp: Path, **ports: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "VLLM_"))}
    env.update(ENGINE_ENV)
    env.update({name.upper(): str(port) for name, port in ports.items()})
    env["CAPTURE_SPOOL_DIR"] = str(tmp / "spool")
    return env


@pytest.fixture(scope="module")
def original_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("original-server")
    port = free_port()
    ports = ("inference_port", "storage_port", "inference_metrics_port", "storage_metrics_port")
    env = service_env(tmp, **{name: free_port() for name in ports})
    args = [sys.executable, "-m", "activation_logging.vllm_serve", "--model", "default",
            "--host", "127.0.0.1", "--port", str(port),
            "--lmdb_path", str(tmp / "exp1_activations.lmdb"), "--target-layers", "second_half",
            "--trim-output-at", ".", "--log-file", str(tmp / "server.log"),
            "--auth_token", TOKEN, "--logprobs-top-k", "5"]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    banner_of(proc, [tmp / "server.log"])
    yield proc, port, env, tmp
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_vllm_serve_stores_the_target_layers_and_trims_the_output(original_server) -> None:
    proc, port, env, tmp = original_server
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0,
                           timeout=300)  # fmt: skip
    prompt = "Write three short sentences about the sea."
    reply = client.completions.create(model="SmolLM2-135M-Instruct", prompt=prompt,
                                      max_tokens=48, temperature=0)  # fmt: skip
    text = reply.choices[0].text
    assert "." not in text, "--trim-output-at cuts the response where '.' first appears"
    with StorageClient(f"127.0.0.1:{env['STORAGE_PORT']}") as storage:
        [record] = storage.wait_for_record(prompt_hash(prompt), timeout=120)
        activations = storage.get_activations(record)
    assert record.response == text
    second_half = LayerSpec.parse("second_half").choose(NUM_LAYERS)
    assert list(record.layers) == second_half == list(range(15, 31))
    assert record.num_positions == record.prompt_length + reply.usage.completion_tokens - 1
    assert {layer: a.shape[0] for layer, a in activations.items()} == {
        layer: record.num_positions for layer in second_half
    }
    assert (tmp / "exp1_activations.lmdb" / "data.mdb").is_file(), "--lmdb_path holds them"
    log = (tmp / "server.log").read_text()
    # Each service's lines: the two gRPC services' loggers, the gateway's access log.
    for line in ("storage_service", "inference_service", '"POST /v1/completions HTTP/1.1" 200'):
        assert line in log, f"--log-file has no {line!r}"


def test_run_test_reports_what_was_found(original_server) -> None:
    _, port, env, tmp = original_server
    from activation_logging.test_lmdb_logging import run_test

    result = run_test(model="SmolLM2-135M-Instruct", prompt="The capital of Italy is",
                      lmdb_path=str(tmp / "exp1_activations.lmdb"), auth_token=TOKEN,
                      server_url=f"http://127.0.0.1:{port}", max_tokens=4,
                      storage_addr=f"127.0.0.1:{env['STORAGE_PORT']}")  # fmt: skip
    assert result["success"] is True, result
    assert result["prompt_hash"] == prompt_hash("The capital of Italy is")
    assert result["layers"] == list(range(15, 31))
    assert set(result["shapes"]) == set(range(15, 31))
    failed = run_test(server_url="http://127.0.0.1:9", timeout=2)
    assert failed["success"] is False and "no" in failed["error"]


def test_the_hub_token_is_only_in_the_inference_services_environment(original_server) -> None:
    proc, port, env, tmp = original_server
    launcher = psutil.Process(proc.pid)
    family = [launcher, *launcher.children(recursive=True)]
    for p in psutil.process_iter(["cmdline"]):
        assert TOKEN not in " ".join(p.info["cmdline"] or []), p
    having = {" ".join(p.cmdline()[1:3]) for p in family if TOKEN in p.environ().values()}
    # The launcher (re-executed without the flag) holds it to hand it on; of the services,
    # only inference and its engine processes.
    assert "-m inference_service" in having
    assert not any("storage_service" in h or "-m gateway" in h for h in having), having
    for path in tmp.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_an_unserved_tested_model_stops_before_the_first_request(original_server) -> None:
    _, port, env, tmp = original_server
    metrics = f"http://127.0.0.1:{port}/metrics"
    before = total(scrape(metrics), "actlog_gateway_requests_total",
                   endpoint="/v1/chat/completions")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "tasks/refusal_test/nonsense_mixed_entities.py", "--do_inference",
         "--do_eval", "--tested_model", "mistralai/Mistral-7B-Instruct-v0.2",
         "--server", f"http://127.0.0.1:{port}", "--output_base_dir", str(tmp / "output")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SmolLM2-135M-Instruct" in lines[0] and "--model mistralai/Mistral-7B" in lines[0]
    after = total(scrape(metrics), "actlog_gateway_requests_total",
                  endpoint="/v1/chat/completions")  # fmt: skip
    assert after == before, "no completion was sent"


def test_an_unknown_flag_is_argparses_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "activation_logging.vllm_serve", "--no-such-flag"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("error: unrecognized arguments: --no-such-flag")
    )


def test_uvicorn_serves_the_app_attaching_to_inference_and_starting_storage(
    stack, tmp_path
) -> None:
    """Inference answers (the session's); storage at the configured address does not, so the
    app's lifespan starts it there, and stops it at shutdown."""
    port, storage_port = free_port(), free_port()
    env = service_env(tmp_path, inference_port=stack.config.inference_port,
                      storage_port=storage_port, storage_metrics_port=free_port())  # fmt: skip
    env["ACTIVATION_LMDB_PATH"] = str(tmp_path / "lmdb")
    env["ACTLOG_LOG_DIR"] = str(tmp_path / "logs")
    uvicorn = Path(sys.executable).with_name("uvicorn")
    proc = subprocess.Popen(
        [str(uvicorn), "activation_logging.server:app", "--host", "127.0.0.1", "--port",
         str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k",
                               max_retries=0, timeout=300)  # fmt: skip
        reply = client.completions.create(model="SmolLM2-135M-Instruct", prompt="Uvicorn says",
                                          max_tokens=3, temperature=0)  # fmt: skip
        assert reply.model_extra["activations"][0]["record_ids"]
        assert grpc_serving(f"127.0.0.1:{storage_port}"), "the lifespan started storage"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert not grpc_serving(f"127.0.0.1:{storage_port}"), "and stopped what it started"
    assert grpc_serving(stack.config.inference_addr), "and left what it attached to"
