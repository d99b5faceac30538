"""Stored activations equal a transformers forward pass of the same token ids, row by row.

A capture silently misaligned by one position or one request is the worst bug this project can
have, so these tests compare every position of every captured layer, and prove that the
comparison itself catches a shift or a swap.
"""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest

from actlog_common.hashing import prompt_hash
from actlog_common.layers import recommended_layers
from actlog_common.v1 import inference_pb2, inference_pb2_grpc
from tests.reference import record_mismatches

pytestmark = pytest.mark.vllm

PROMPT = "Write one sentence about the ocean, the moon and the tides."


def capture(client, model, storage, prompt: str, layers, max_tokens: int = 12):
    reply = client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"capture_layers": layers},
    )
    record_id = reply.model_extra["activations"][0]["record_ids"][0]
    records = storage.wait_for_record(prompt_hash(prompt), timeout=120)
    [record] = [r for r in records if r.record_id == record_id]
    return reply, record, storage.get_activations(record.record_id)


@pytest.fixture(scope="module")
def captured(openai_client, served_model, storage):
    # Last layer, the embeddings, and two inner layers (one by a negative index).
    return capture(openai_client, served_model, storage, PROMPT, [0, 7, -12, -1], max_tokens=16)


def test_every_position_of_every_layer_matches_transformers(captured, reference_fp32):
    reply, record, activations = captured
    assert sorted(activations) == [0, 7, record.num_layers - 11, record.num_layers]
    generated = reply.usage.completion_tokens
    assert record.num_positions == record.prompt_length + generated - 1
    for rows in activations.values():
        assert rows.shape == (record.num_positions, record.hidden_size)
    assert record.dtype == "float32"
    assert (
        record_mismatches(activations, list(record.token_ids), record.num_positions, reference_fp32)
        == []
    )


def test_the_check_catches_a_capture_shifted_by_one_position(captured, reference_fp32):
    _, record, activations = captured
    shifted = {layer: np.roll(rows, 1, axis=0) for layer, rows in activations.items()}
    problems = record_mismatches(
        shifted, list(record.token_ids), record.num_positions, reference_fp32
    )
    assert problems, "a shifted capture must fail the comparison"
    # Equally, rows checked against the token ids shifted by one must fail.
    ids = list(record.token_ids)
    assert record_mismatches(activations, ids[1:] + ids[:1], record.num_positions, reference_fp32)


def test_the_check_catches_rows_swapped_between_requests(
    captured, openai_client, served_model, storage, reference_fp32
):
    _, record, activations = captured
    other_prompt = "List three prime numbers greater than ten, please."
    _, other, other_rows = capture(
        openai_client, served_model, storage, other_prompt, [0, 7, -12, -1]
    )
    n = min(record.num_positions, other.num_positions)
    swapped = {layer: other_rows[layer][:n] for layer in activations}
    assert record_mismatches(swapped, list(record.token_ids), n, reference_fp32)


def test_eight_concurrent_requests_each_get_exactly_their_own_rows(
    openai_client, served_model, storage, reference_fp32
):
    prompts = [
        "Describe a red apple in one line.",
        "What is two plus two? Answer:",
        "Translate 'good morning' into French:",
        "A haiku about autumn leaves:",
        "The largest planet in the solar system is",
        "Give a synonym for 'happy':",
        "Once upon a time, in a small village by the sea, there lived",
        "Python is a programming language that",
    ]
    layer_sets = [[-1], [0, 30], [5, 10, 15], [1], "recommended", [29, -1], [3, -3], "all"]

    def one(i: int):
        return capture(
            openai_client, served_model, storage, prompts[i], layer_sets[i], max_tokens=6 + 2 * i
        )

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(one, range(len(prompts))))

    for prompt, layers, (reply, record, activations) in zip(
        prompts, layer_sets, results, strict=True
    ):
        assert record.prompt == prompt
        n = record.num_layers
        expected = (
            list(range(n + 1))
            if layers == "all"
            else recommended_layers(n)
            if layers == "recommended"
            else sorted({x % (n + 1) for x in layers})
        )
        assert sorted(activations) == list(expected)
        assert record.num_positions == record.prompt_length + reply.usage.completion_tokens - 1
        problems = record_mismatches(
            activations, list(record.token_ids), record.num_positions, reference_fp32
        )
        assert problems == [], f"{prompt!r}: {problems[:5]}"


def test_the_session_engine_captured_by_hooks(stack):
    """ENFORCE_EAGER: nothing compiled, forward hooks did the capturing, any layer may be
    asked for."""
    with grpc.insecure_channel(stack.config.inference_addr) as channel:
        status = inference_pb2_grpc.InferenceStub(channel).GetStatus(
            inference_pb2.StatusRequest(worker_counters=True), timeout=30
        )
    assert status.capture_path == "eager" and "ENFORCE_EAGER" in status.capture_path_reason
    assert status.compile_mode == "NONE" and status.compiled_graphs == 0
    assert list(status.available_layers) == []
    assert status.worker.layer_hook_calls > 0 and status.worker.frames > 0
    assert status.worker.graph_writes == 0
