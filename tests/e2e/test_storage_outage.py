"""Generation never waits for storage, and no record is lost or duplicated when storage dies.

Captures wait in the inference service's on-disk spool while storage is down or restarting,
and are replayed when it returns. Requests are sent one at a time so that every run computes
exactly the same bytes as the reference run (same batch, same kernels).
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from actlog_common.hashing import prompt_hash
from actlog_common.v1 import inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.vllm

PROMPTS = [f"Outage probe {i}: the colour of the sky is" for i in range(50)]
LAYERS = [0, -1]


def send_all(client, model, prompts, on_each=None) -> list[str]:
    record_ids = []
    for i, prompt in enumerate(prompts):
        if on_each:
            on_each(i)
        reply = client.completions.create(
            model=model,
            prompt=prompt,
            max_tokens=3,
            temperature=0,
            extra_body={"capture_layers": LAYERS},
        )
        assert reply.choices[0].text is not None
        record_ids.append(reply.model_extra["activations"][0]["record_ids"][0])
    return record_ids


def activations_by_record(storage, record_ids, count_per_hash) -> dict[str, dict[int, np.ndarray]]:
    """Wait until every prompt has `count_per_hash` complete records; return the asked ones."""
    out = {}
    for prompt, record_id in zip(PROMPTS, record_ids, strict=True):
        records = storage.wait_for_record(prompt_hash(prompt), count=count_per_hash, timeout=180)
        assert len(records) == count_per_hash, "no record lost, none duplicated"
        assert record_id in {r.record_id for r in records}
        out[record_id] = storage.get_activations(record_id, as_float32=False)
    return out


def inference_status(stack) -> inference_pb2.ServiceStatus:
    with grpc.insecure_channel(stack.config.inference_addr) as channel:
        return inference_pb2_grpc.InferenceStub(channel).GetStatus(inference_pb2.StatusRequest())


@pytest.fixture(scope="module")
def reference(openai_client, served_model, storage):
    ids = send_all(openai_client, served_model, PROMPTS)
    return ids, activations_by_record(storage, ids, 1)


def assert_identical(reference, ids, got):
    ref_ids, ref = reference
    for ref_id, record_id in zip(ref_ids, ids, strict=True):
        assert sorted(got[record_id]) == sorted(ref[ref_id])
        for layer, rows in ref[ref_id].items():
            assert got[record_id][layer].tobytes() == rows.tobytes()


def test_storage_killed_mid_stream_loses_and_duplicates_nothing(
    stack, openai_client, served_model, storage, reference
):
    def chaos(i: int) -> None:
        if i == 10:
            stack.stop_service("storage", kill=True)  # kill -9, mid-stream
        if i == 20:
            stack.start_service("storage")

    ids = send_all(openai_client, served_model, PROMPTS, on_each=chaos)
    stack.wait_healthy(timeout=60, names=("storage",))
    got = activations_by_record(storage, ids, 2)
    assert_identical(reference, ids, got)


def test_storage_down_for_the_whole_run_then_started(
    stack, openai_client, served_model, storage, reference
):
    stack.stop_service("storage")
    try:
        ids = send_all(openai_client, served_model, PROMPTS)
        # Everything answered; the captures wait on disk, visibly.
        deadline = time.monotonic() + 60
        while (status := inference_status(stack)).spool_records < len(PROMPTS):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert not status.storage_reachable
        assert status.spool_bytes > 0
    finally:
        stack.start_service("storage")
    stack.wait_healthy(timeout=60, names=("storage",))
    got = activations_by_record(storage, ids, 3)
    assert_identical(reference, ids, got)
    drained = time.monotonic() + 60
    while inference_status(stack).spool_records:
        assert time.monotonic() < drained, "the spool drains once storage is back"
        time.sleep(0.5)


def test_a_storage_restart_does_not_block_concurrent_requests(stack, openai_client, served_model):
    stop = threading.Event()
    errors = []

    def load():
        while not stop.is_set():
            try:
                openai_client.completions.create(
                    model=served_model, prompt="Background load:", max_tokens=2
                )
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        stack.stop_service("storage", kill=True)
        time.sleep(2)
        stack.start_service("storage")
        stack.wait_healthy(timeout=60, names=("storage",))
    finally:
        stop.set()
        worker.join()
    assert errors == []
