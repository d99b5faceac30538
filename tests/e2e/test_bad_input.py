"""Inputs a fault-injection run turned into 500s, wrong statuses or wasted engine time, each
against the real stack: invalid Unicode, non-ASCII API keys, chunked bodies, chat without
max_tokens on a long conversation, clients that go away, huge prompts, and the small ones
(Retry-After, the field at fault, internal addresses, /health types, `actlog find`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from actlog_common.ids import new_record_id
from tests.e2e.helpers import extra_gateway, scrape, total

pytestmark = pytest.mark.vllm

SURROGATE = "abc\ud800"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"prompt": SURROGATE}, "prompt"),
        ("/v1/completions", {"prompt": "hi", "stop": [SURROGATE]}, "stop.0"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": SURROGATE}]},
         "messages.0.content"),
        ("/v1/completions", {"prompt": "hi", "model": SURROGATE}, "model"),
    ],
    ids=["prompt", "stop", "chat", "model"],
)  # fmt: skip
def test_a_lone_surrogate_is_400_on_a_live_connection(stack, served_model, path, body, param):
    payload = {"model": served_model, "max_tokens": 2, **body}
    text = json.dumps(payload)  # ensure_ascii: the surrogate travels as the escape \\ud800
    with httpx.Client(base_url=stack.config.gateway_url, timeout=60) as client:
        bad = client.post(path, content=text, headers={"Content-Type": "application/json"})
        assert bad.status_code == 400, bad.text
        error = bad.json()["error"]
        assert error["param"] == param and "not valid Unicode" in error["message"]
        # The same keep-alive connection serves the next request.
        good = client.post(
            "/v1/completions", json={"model": served_model, "prompt": "hi", "max_tokens": 1}
        )
        assert good.status_code == 200, good.text


def test_a_non_ascii_api_key_is_401(stack, tmp_path) -> None:
    gateway = extra_gateway(stack, tmp_path, API_KEYS="k-one")
    try:
        url = f"{gateway.config.gateway_url}/v1/models"
        for key in ("k-\xe9", "\u2603"):
            reply = httpx.get(url, headers={"Authorization": f"Bearer {key}".encode()})
            assert reply.status_code == 401, reply.text
            assert reply.json()["error"]["type"] == "Unauthorized"
        assert httpx.get(url, headers={"Authorization": "Bearer k-one"}).status_code == 200
        assert "Traceback" not in (tmp_path / "gateway.log").read_text()
    finally:
        gateway.stop()


def test_a_chunked_body_above_the_limit_is_413(stack, served_model, tmp_path) -> None:
    gateway = extra_gateway(stack, tmp_path, MAX_BODY_BYTES="2000")
    try:
        url = f"{gateway.config.gateway_url}/v1/completions"

        def chunks(size: int):
            body = f'{{"model": "{served_model}", "max_tokens": 1, "prompt": "{"x" * size}"}}'
            for i in range(0, len(body), 500):
                yield body[i : i + 500].encode()

        big = httpx.post(url, content=chunks(5000), headers={"Content-Type": "application/json"})
        assert big.status_code == 413, big.text
        assert big.json()["error"]["message"] == "request body is larger than 2000 bytes"
        small = httpx.post(url, content=chunks(10), headers={"Content-Type": "application/json"},
                           timeout=60)  # fmt: skip
        assert small.status_code == 200, small.text
    finally:
        gateway.stop()


def test_chat_without_max_tokens_uses_the_rest_of_the_context(openai_client, served_model) -> None:
    context = openai_client.models.list().data[0].model_extra["max_model_len"]
    sentence = "Tell me more about the history of tea. "

    def ask(repeats: int, **options):
        return openai_client.chat.completions.create(
            model=served_model, messages=[{"role": "user", "content": sentence * repeats}],
            temperature=0, **options,
        )  # fmt: skip

    # A prompt that leaves about 150 tokens of the context, so the answer is short to make.
    base = ask(10, max_tokens=1).usage.prompt_tokens
    per_sentence = (ask(110, max_tokens=1).usage.prompt_tokens - base) / 100
    reply = ask(10 + int((context - 150 - base) / per_sentence))
    assert context - 300 < reply.usage.prompt_tokens < context
    assert reply.usage.prompt_tokens + reply.usage.completion_tokens <= context
    if reply.choices[0].finish_reason == "length":  # it ran to the end of the context
        assert reply.usage.prompt_tokens + reply.usage.completion_tokens == context


def test_an_unknown_layer_names_the_field(openai_client, served_model) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.completions.create(model=served_model, prompt="x", max_tokens=1,
                                         extra_body={"capture_layers": [999]})  # fmt: skip
    assert info.value.body["param"] == "capture_layers"


def test_the_capture_cap_applies_to_the_whole_request(openai_client, served_model) -> None:
    # 4 layers x ~1,900 positions x 576 x 4 bytes = 17.5 MB per prompt: one prompt is within
    # the default 2 GiB cap, but a request of 64 such prompts (1.1 GB) shares it 64 ways.
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.completions.create(
            model=served_model, prompt=[f"Prompt {i}" for i in range(64)], max_tokens=1900,
            extra_body={"capture_layers": "all"},
        )  # fmt: skip
    assert "shared by 64 prompts" in info.value.body["message"]


def test_a_client_that_goes_away_frees_the_engine(stack, served_model, tmp_path) -> None:
    gateway = extra_gateway(stack, tmp_path)
    url = gateway.config.gateway_url
    engine = f"http://127.0.0.1:{stack.config.inference_metrics_port}/metrics"
    try:

        async def impatient() -> None:
            async with httpx.AsyncClient(timeout=1.0) as client:
                body = {"model": served_model, "prompt": "Count:", "max_tokens": 1500,
                        "ignore_eos": True}  # fmt: skip
                calls = [client.post(f"{url}/v1/completions", json=body) for _ in range(3)]
                results = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(r, httpx.TimeoutException) for r in results), results

        asyncio.run(impatient())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = total(scrape(engine), "vllm:num_requests_running")
            if running == 0:
                break
            time.sleep(0.2)
        assert running == 0, "the engine kept generating for clients that left"
        m = scrape(f"{url}/metrics")
        assert total(m, "actlog_gateway_requests_in_flight") == 0
        assert total(m, "actlog_gateway_requests_total", status="499") == 3
    finally:
        gateway.stop()


def test_a_huge_prompt_does_not_hold_up_small_requests(stack, served_model) -> None:
    """Tokenizing a 3 MB prompt takes seconds: it happens off the inference event loop, so a
    tiny request sent after it is answered first."""
    url = f"{stack.config.gateway_url}/v1/completions"
    finished: list[str] = []

    async def run() -> None:
        async with httpx.AsyncClient(timeout=120) as client:

            async def send(name: str, prompt: str) -> None:
                await client.post(url, json={"model": served_model, "prompt": prompt,
                                             "max_tokens": 1})  # fmt: skip
                finished.append(name)

            huge = asyncio.create_task(send("huge", "lorem ipsum dolor sit amet " * 110_000))
            await asyncio.sleep(0.3)  # the huge prompt is being tokenized
            await send("tiny", "hi")
            await huge

    asyncio.run(run())
    assert finished == ["tiny", "huge"]


def test_small_things(stack, served_model, tmp_path) -> None:
    # /health: numbers are numbers.
    health = httpx.get(f"{stack.config.gateway_url}/health").json()["inference"]
    assert isinstance(health["spool_bytes"], int) and isinstance(health["stored_records"], int)
    # 429 says when to come back.
    gateway = extra_gateway(stack, tmp_path, MAX_CONCURRENT_REQUESTS="0")
    try:
        limited = httpx.post(f"{gateway.config.gateway_url}/v1/completions",
                             json={"model": served_model, "prompt": "x"})  # fmt: skip
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    finally:
        gateway.stop()
    # `actlog find` with no match says so and exits 1.
    found = subprocess.run(
        [sys.executable, "-m", "actlog.cli", "find", "--prompt", "never sent to the stack",
         "--storage-addr", stack.config.storage_addr],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert found.returncode == 1 and "no records for prompt hash" in found.stderr


def test_a_second_inference_service_on_the_same_port_fails_to_start(stack) -> None:
    env = {"INFERENCE_PORT": str(stack.config.inference_port), "INFERENCE_METRICS_PORT": "0"}
    second = subprocess.run(
        [sys.executable, "-m", "inference_service"], env={**os.environ, **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert second.returncode != 0
    assert "could not bind" in second.stderr.strip().splitlines()[-1], second.stderr[-2000:]


def test_actlog_dead_letters_lists_and_retries(stack, tmp_path) -> None:
    """A record storage refuses lands in the dead-letter area; `actlog dead-letters` lists it
    with the reason, and --retry-all sends it again (refused again here: its header is bad)."""
    from inference_service.capture.spool import Spool
    from tests.integration.helpers import spool_record

    spool = Spool(Path(stack.config.capture_spool_dir))
    record_id = spool_record(spool, "a record storage refuses")
    spooled = json.loads((spool.root / record_id / "header.json").read_text())
    spooled["header"]["dtype"] = "float8"  # storage holds bf16, fp16 and fp32 only
    (spool.root / record_id / "header.json").write_text(json.dumps(spooled))
    spool.dead_letter(record_id, "put aside by the test")
    cli = [sys.executable, "-m", "actlog.cli", "dead-letters", "--inference-addr",
           stack.config.inference_addr]  # fmt: skip

    listed = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert {"record_id": record_id, "reason": "put aside by the test"} in [
        json.loads(line) for line in listed.stdout.splitlines()
    ]
    retried = subprocess.run([*cli, "--retry-all"], capture_output=True, text=True, timeout=60)
    assert retried.returncode == 0, retried.stderr
    assert {"record_id": record_id, "retried": True} == json.loads(retried.stdout.splitlines()[0])
    deadline = time.monotonic() + 30
    while True:
        letters = dict(spool.dead_letters())
        if "INVALID_ARGUMENT" in letters.get(record_id, ""):
            break
        assert time.monotonic() < deadline, letters
        time.sleep(0.2)
    assert "float8" in letters[record_id]
    health = httpx.get(f"{stack.config.gateway_url}/health").json()["inference"]
    assert health["dead_letter_records"] >= 1
    unknown = subprocess.run([*cli, "--retry", new_record_id()], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert unknown.returncode == 1 and "not dead letters" in unknown.stderr
