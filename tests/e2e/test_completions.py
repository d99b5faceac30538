"""The stack end to end: the official openai client in, records out of the storage service."""

from __future__ import annotations

import json
import urllib.request

import grpc
import openai
import pytest

from actlog.errors import InvalidArgumentError, NotFoundError
from actlog_common.hashing import prompt_hash
from actlog_common.v1 import storage_pb2, storage_pb2_grpc

pytestmark = pytest.mark.vllm


def complete(client: openai.OpenAI, model: str, prompt: str, **extra) -> openai.types.Completion:
    body = {k: extra.pop(k) for k in ("capture", "capture_layers") if k in extra}
    return client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=extra.pop("max_tokens", 8),
        temperature=0,
        extra_body=body or None,
        **extra,
    )


def test_completion_is_recorded_under_the_prompt_hash(openai_client, served_model, storage):
    prompt = "The capital of France is"
    reply = complete(openai_client, served_model, prompt)

    assert reply.object == "text_completion"
    assert reply.choices[0].text.strip(), "the real model answers"
    assert "Paris" in reply.choices[0].text
    ref = reply.model_extra["activations"][0]
    assert ref["prompt_hash"] == prompt_hash(prompt)

    [record] = storage.wait_for_record(prompt_hash(prompt), timeout=60)
    assert record.record_id == ref["record_ids"][0]
    assert record.status == "COMPLETE"
    assert record.prompt == prompt
    assert record.response == reply.choices[0].text
    assert record.model == served_model
    assert record.prompt_length == reply.usage.prompt_tokens
    generated = reply.usage.completion_tokens
    assert len(record.token_ids) == record.prompt_length + generated
    assert len(record.token_strings) == len(record.token_ids)
    assert "".join(record.token_strings[: record.prompt_length]) == prompt
    assert record.num_positions == record.prompt_length + generated - 1
    # The default capture is the last layer: the final-normed output.
    assert list(record.layers) == [record.num_layers]
    [rows] = storage.get_activations(record.record_id).values()
    assert rows.shape == (record.num_positions, record.hidden_size)


def test_same_prompt_twice_gives_two_records(openai_client, served_model, storage):
    prompt = "Name one primary colour:"
    first = complete(openai_client, served_model, prompt)
    second = complete(openai_client, served_model, prompt)

    records = storage.wait_for_record(prompt_hash(prompt), count=2, timeout=60)
    ids = [r.record_id for r in records]
    assert len(set(ids)) == 2
    expected = {
        first.model_extra["activations"][0]["record_ids"][0],
        second.model_extra["activations"][0]["record_ids"][0],
    }
    assert set(ids) == expected
    assert ids == sorted(ids, reverse=True), "newest first"


def test_capture_off_stores_nothing(openai_client, served_model, storage):
    prompt = "A request that opts out of capture."
    reply = complete(openai_client, served_model, prompt, capture=False)
    assert reply.model_extra.get("activations") is None
    # A captured request sent afterwards lands, so the uncaptured one had its chance to.
    marker = "A captured request after the opt-out."
    complete(openai_client, served_model, marker)
    storage.wait_for_record(prompt_hash(marker), timeout=60)
    assert storage.find_by_prompt_hash(prompt_hash(prompt)) == []


@pytest.mark.parametrize(
    ("body", "param_hint"),
    [
        ({"prompt": "hi", "max_tokens": 4, "capture_layers": [31]}, "layer 31"),
        ({"prompt": "hi", "max_tokens": 4, "capture_layers": [-32]}, "layer -32"),
        ({"prompt": "", "max_tokens": 4}, "prompt"),
        ({"prompt": [], "max_tokens": 4}, "prompt"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": -3}, "max_tokens"),
        ({"prompt": "hi", "temperature": -1}, "temperature"),
        ({"prompt": "hi", "capture_layers": "middle"}, "capture_layers"),
        ({"prompt": "hi", "capture": False, "capture_layers": [1]}, "capture"),
    ],
)
def test_bad_requests_get_openai_shaped_400s(stack, served_model, body, param_hint):
    status, payload = post_json(stack, "/v1/completions", {"model": served_model, **body})
    assert status == 400, payload
    error = payload["error"]
    assert param_hint in (error["message"] + str(error.get("param")))
    assert error["type"]


def test_unknown_model_is_404(stack):
    status, payload = post_json(stack, "/v1/completions", {"model": "no-such-model", "prompt": "x"})
    assert status == 404
    assert "no-such-model" in payload["error"]["message"]


def test_non_json_body_is_400_and_the_gateway_stays_up(stack, openai_client, served_model):
    request = urllib.request.Request(
        f"{stack.config.gateway_url}/v1/completions",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    status, payload = send(request)
    assert status == 400
    assert set(payload["error"]) >= {"message", "type", "param", "code"}
    # Still serving after every kind of bad input.
    assert complete(openai_client, served_model, "Still alive?", max_tokens=2).choices


def test_openai_client_raises_bad_request_for_invalid_layers(openai_client, served_model):
    with pytest.raises(openai.BadRequestError) as info:
        complete(openai_client, served_model, "x", capture_layers=[1000])
    assert "layer 1000" in str(info.value)


def test_storage_grpc_errors(stack, storage):
    with grpc.insecure_channel(stack.config.storage_addr) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        with pytest.raises(grpc.RpcError) as bad_hash:
            stub.FindByPromptHash(storage_pb2.FindByPromptHashRequest(prompt_hash="not-a-hash"))
        assert bad_hash.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as unknown:
            stub.GetRecord(storage_pb2.GetRecordRequest(record_id="0" * 32))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as malformed:
            stub.GetRecord(storage_pb2.GetRecordRequest(record_id="xyz"))
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same through the Python client, as typed errors.
    with pytest.raises(InvalidArgumentError):
        storage.find_by_prompt_hash("ABC")
    with pytest.raises(NotFoundError):
        storage.get_record("f" * 32)


def post_json(stack, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{stack.config.gateway_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer anything"},
        method="POST",
    )
    return send(request)


def send(request: urllib.request.Request) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
