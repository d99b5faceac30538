"""The gateway behaves like OpenAI's API for the official client: completions and chat, sync,
async and streaming, logprobs and echo, errors in OpenAI's shape, auth and limits."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actlog_common.hashing import prompt_hash
from tests.e2e.helpers import extra_gateway

pytestmark = pytest.mark.vllm

SECRET = "tok-NEVER-STORE-7f3a9c"


@pytest.fixture
def async_client(stack):
    """A factory: each asyncio.run needs a client bound to its own event loop."""
    return lambda: openai.AsyncOpenAI(
        base_url=f"{stack.config.gateway_url}/v1", api_key="unused", max_retries=0, timeout=300
    )


def test_models_lists_the_served_model(openai_client, served_model):
    models = openai_client.models.list()
    assert [m.id for m in models.data] == [served_model]


def test_eval_harness_scoring_request_gets_echoed_logprobs(openai_client, served_model):
    prompt = "The capital of France is Paris"
    reply = openai_client.completions.create(
        model=served_model, prompt=prompt, echo=True, logprobs=1, max_tokens=1,
        temperature=0, seed=1234,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.text.startswith(prompt)
    lp = choice.logprobs
    n_prompt = reply.usage.prompt_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n_prompt + 1
    assert lp.token_logprobs[0] is None
    assert all(isinstance(x, float) and x <= 0 for x in lp.token_logprobs[1:])
    assert all(isinstance(d, dict) and d for d in lp.top_logprobs[1:])
    # No extra BOS: the echoed tokens spell the prompt exactly.
    assert "".join(lp.tokens[:n_prompt]) == prompt
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_generation_logprobs_without_echo(openai_client, served_model):
    reply = openai_client.completions.create(
        model=served_model, prompt="One, two, three,", logprobs=3, max_tokens=4, temperature=0
    )
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == reply.usage.completion_tokens
    assert "".join(lp.tokens) == reply.choices[0].text
    for token, top in zip(lp.tokens, lp.top_logprobs, strict=True):
        # Greedy: the chosen token is the most likely one.
        assert max(top, key=top.get) == token


def test_stop_sequence_ends_the_text_before_it(openai_client, served_model):
    reply = openai_client.completions.create(
        model=served_model, prompt="Count: 1, 2, 3, 4,", max_tokens=20, temperature=0,
        stop=[","],
    )  # fmt: skip
    assert "," not in reply.choices[0].text
    assert reply.choices[0].finish_reason == "stop"


def test_streamed_completion_equals_the_whole_one(openai_client, served_model):
    args = dict(model=served_model, prompt="Tell me about the moon.", max_tokens=24,
                temperature=0, seed=7)  # fmt: skip
    whole = openai_client.completions.create(**args)
    chunks = list(
        openai_client.completions.create(
            **args, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing and finishing[-1].model_extra["activations"][0]["prompt_hash"] == prompt_hash(
        args["prompt"]
    )


def test_batch_prompts_and_n(openai_client, served_model):
    reply = openai_client.completions.create(
        model=served_model, prompt=["Hello,", "Goodbye,"], n=2, max_tokens=4, temperature=0.7,
    )  # fmt: skip
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    refs = reply.model_extra["activations"]
    assert [r["prompt_hash"] for r in refs] == [prompt_hash("Hello,"), prompt_hash("Goodbye,")]
    assert all(len(r["record_ids"]) == 2 for r in refs)


def test_token_id_prompt_gives_the_same_completion(openai_client, served_model, storage):
    prompt = "The sun is a star that"
    by_text = openai_client.completions.create(
        model=served_model, prompt=prompt, max_tokens=5, temperature=0
    )
    [record] = storage.wait_for_record(prompt_hash(prompt), timeout=60)
    ids = list(record.token_ids[: record.prompt_length])
    by_ids = openai_client.completions.create(
        model=served_model, prompt=ids, max_tokens=5, temperature=0
    )
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)


def test_async_client(async_client, served_model):
    async def main():
        client = async_client()
        return await asyncio.gather(*(
            client.completions.create(model=served_model, prompt=f"Number {i}:",
                                            max_tokens=3, temperature=0)
            for i in range(4)
        ))  # fmt: skip

    replies = asyncio.run(main())
    assert all(r.choices[0].finish_reason in ("stop", "length") for r in replies)


def test_chat_whole_and_streamed_agree(openai_client, served_model, storage):
    messages = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip
    whole = openai_client.chat.completions.create(
        model=served_model, messages=messages, max_tokens=12, temperature=0, seed=3,
        logprobs=True, top_logprobs=2,
    )  # fmt: skip
    answer = whole.choices[0].message.content
    assert whole.object == "chat.completion" and "Paris" in answer
    assert [t.token for t in whole.choices[0].logprobs.content] and all(
        len(t.top_logprobs) == 2 for t in whole.choices[0].logprobs.content
    )
    stream = openai_client.chat.completions.create(
        model=served_model, messages=messages, max_tokens=12, temperature=0, seed=3,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    # The record's prompt is the rendered chat template; its hash is the lookup key.
    ref = whole.model_extra["activations"][0]
    [record] = [r for r in storage.wait_for_record(ref["prompt_hash"], timeout=60)
                if r.record_id == ref["record_ids"][0]]  # fmt: skip
    assert "What is the capital of France?" in record.prompt
    assert prompt_hash(record.prompt) == ref["prompt_hash"]
    assert record.response == answer


def test_async_streaming_chat(async_client, served_model):
    async def main():
        stream = await async_client().chat.completions.create(
            model=served_model, messages=[{"role": "user", "content": "Say hi"}],
            max_tokens=5, stream=True,
        )  # fmt: skip
        return [c async for c in stream]

    chunks = asyncio.run(main())
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/completions", {"prompt": "x " * 3000, "max_tokens": 1}, 413),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 100000}, 400),
        ("/v1/completions", {"prompt": "hi", "n": 0}, 400),
        ("/v1/completions", {"prompt": "hi", "logprobs": 50}, 400),
        ("/v1/chat/completions", {"messages": []}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400),
        ("/v1/chat/completions", {"messages": "hello"}, 400),
    ],
)
def test_errors_have_openai_shape(stack, served_model, path, body, status):
    reply = httpx.post(f"{stack.config.gateway_url}{path}", json={"model": served_model, **body},
                       timeout=60)  # fmt: skip
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]


def test_api_keys_are_enforced_when_configured(stack, served_model, tmp_path):
    gateway = extra_gateway(stack, tmp_path, API_KEYS="k-one,k-two")
    url = f"{gateway.config.gateway_url}/v1"
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=url, api_key="k-two", max_retries=0)
        assert ok.completions.create(model=served_model, prompt="a", max_tokens=1).choices
        assert httpx.get(f"{gateway.config.gateway_url}/health").status_code == 200
    finally:
        gateway.stop()


def in_flight(gateway_url: str) -> float:
    """Generations the gateway holds a concurrency slot for (its in-flight gauge)."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    [family] = text_string_to_metric_families(
        "\n".join(line for line in text.splitlines() if "requests_in_flight" in line)
    )
    return family.samples[0].value


def test_concurrency_and_body_limits(stack, served_model, tmp_path):
    """With its one slot held by a stream, the gateway refuses the next request at once (429
    in OpenAI's shape, with Retry-After); the slot comes back when the stream's client leaves.

    The overlap is made, not hoped for: the second request is sent only once the stream's 200
    has started (its first token read), and the stream then still has 1,500 tokens to
    generate past end-of-sequence, unread until the 429 is back: seconds of engine work
    against the milliseconds a refusal takes. (The mock-backed check of the limiter, where the
    slots are held on an event, is in tests/unit/gateway/test_serving.py.)"""
    gateway = extra_gateway(stack, tmp_path, MAX_CONCURRENT_REQUESTS="1", MAX_BODY_BYTES="2000")
    url = gateway.config.gateway_url
    try:
        big = httpx.post(f"{url}/v1/completions", timeout=30,
                         json={"model": served_model, "prompt": "x" * 5000})  # fmt: skip
        assert big.status_code == 413 and big.json()["error"]["message"]
        assert big.json()["error"]["type"] == "Request Entity Too Large"

        long_stream = {"model": served_model, "prompt": "Count:", "max_tokens": 1500,
                       "ignore_eos": True, "stream": True}  # fmt: skip
        short = {"model": served_model, "prompt": "Story:", "max_tokens": 1}
        with (
            httpx.Client(base_url=url, timeout=300) as client,
            client.stream("POST", "/v1/completions", json=long_stream) as held,
        ):
            assert held.status_code == 200
            # Kept in a name: an iterator dropped here would close the stream's connection.
            lines = held.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            chunk = json.loads(first.removeprefix("data: "))
            assert chunk["choices"][0].get("finish_reason") is None  # a token, not the end
            assert in_flight(url) == 1
            limited = client.post("/v1/completions", json=short)
        # Leaving the stream closed its connection: the gateway aborts it, freeing the slot.
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"]["type"] == "Too Many Requests"
        assert limited.headers["Retry-After"] == "1"
        deadline = time.monotonic() + 30
        while in_flight(url) != 0:
            assert time.monotonic() < deadline, "the stream's slot never came back"
            time.sleep(0.1)
        after = httpx.post(f"{url}/v1/completions", json=short, timeout=60)
        assert after.status_code == 200, after.text
    finally:
        gateway.stop()


def test_auth_token_is_never_stored_logged_or_echoed(stack, openai_client, served_model, storage):
    prompt = "A request carrying a model token."
    reply = openai_client.completions.create(
        model=served_model, prompt=prompt, max_tokens=3, extra_body={"auth_token": SECRET}
    )
    chat = openai_client.chat.completions.create(
        model=served_model, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
        extra_body={"auth_token": SECRET},
    )  # fmt: skip
    storage.wait_for_record(prompt_hash(prompt), timeout=60)
    assert SECRET not in reply.model_dump_json() and SECRET not in chat.model_dump_json()
    root = Path(stack.config.activation_lmdb_path).parent
    for path in [*root.rglob("*"), *Path(stack.config.log_dir).rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"found in {path}"


def test_inference_down_gives_503_fast_and_recovers(stack, openai_client, served_model):
    health = f"{stack.config.gateway_url}/health"
    assert httpx.get(health).status_code == 200
    stack.stop_service("inference")
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            openai_client.completions.create(model=served_model, prompt="x", max_tokens=1)
        assert time.monotonic() - started < 1.0
        assert info.value.status_code == 503
        error = json.loads(info.value.response.text)["error"]
        assert error["type"] == "ServiceUnavailableError"
        assert "127.0.0.1" not in error["message"] and "ipv4" not in error["message"]
        assert info.value.response.headers["Retry-After"] == "1"
        # Not ready (a load balancer takes it out of rotation), but alive (nothing restarts it).
        down = httpx.get(health)
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable"
        assert down.json()["inference"]["status"] == "unavailable"
        assert httpx.get(f"{health}/live").status_code == 200
    finally:
        stack.start_service("inference")
    # While the engine loads, inference answers but cannot serve: still 503.
    saw_loading = False
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        reply = httpx.get(health)
        inference = reply.json()["inference"]
        ready = inference["status"] == "ok" and inference["ready"]
        assert reply.status_code == (200 if ready else 503), reply.text
        saw_loading |= inference["status"] == "ok" and not ready
        if ready:
            break
        time.sleep(0.2)
    assert saw_loading, "never saw the engine loading"
    stack.wait_healthy(timeout=900, names=("inference",))
    up = httpx.get(health)
    assert up.status_code == 200 and up.json()["inference"]["ready"] is True
    # The same gateway and client recover without a restart.
    assert openai_client.completions.create(model=served_model, prompt="y", max_tokens=1).choices
