"""Every record id a response returns is a record that will exist: the spool has a budget
(CAPTURE_SPOOL_MAX_BYTES), a capture reserves its worst case before generation starts, and a
request whose capture the spool cannot take is refused with 503 instead of answered with a
record id that would be dropped. Shown with storage down, on an engine of its own."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from actlog.client import StorageClient
from actlog.launcher import Stack, StackConfig, free_port
from actlog_common.hashing import prompt_hash
from tests.conftest import ENGINE_ENV, stopped_after
from tests.e2e.helpers import scrape, total

pytestmark = pytest.mark.vllm

SPOOL_MAX_BYTES = 6_000_000
# Capturing all 31 hidden states of SmolLM2 in float32 costs 31 x 576 x 4 = 71 KiB per row.
ROW_BYTES = 31 * 576 * 4


@pytest.fixture(scope="module")
def storage_down_stack(tmp_path_factory, model_dir):
    tmp = tmp_path_factory.mktemp("spool-limits")
    config = StackConfig(
        gateway_port=free_port(), inference_port=free_port(), inference_metrics_port=free_port(),
        storage_port=free_port(), storage_metrics_port=free_port(),
        activation_lmdb_path=str(tmp / "lmdb"), capture_spool_dir=str(tmp / "spool"),
        dtype="float32", log_dir=str(tmp / "logs"),
        extra_env={**ENGINE_ENV, "CAPTURE_SPOOL_MAX_BYTES": str(SPOOL_MAX_BYTES)},
    )  # fmt: skip
    stack = Stack(config)
    stack.start_service("inference")  # storage stays down for now
    stack.start_service("gateway")
    with stopped_after(stack, tmp / "logs"):
        stack.wait_healthy(timeout=900, names=("inference", "gateway"))
        yield stack


def test_captures_beyond_the_spool_budget_are_refused_and_the_rest_arrive(storage_down_stack):
    stack = storage_down_stack
    client = openai.OpenAI(base_url=f"{stack.config.gateway_url}/v1", api_key="k",
                           max_retries=0, timeout=300)  # fmt: skip
    model = client.models.list().data[0].id
    accepted: list[tuple[str, list[str]]] = []
    refused = None
    for i in range(10):
        prompt = f"Spool budget {i}:"
        try:
            reply = client.completions.create(
                model=model, prompt=prompt, max_tokens=16, temperature=0,
                extra_body={"capture_layers": "all", "ignore_eos": True},
            )  # fmt: skip
        except openai.APIStatusError as exc:
            refused = exc
            break
        accepted.append((prompt, reply.model_extra["activations"][0]["record_ids"]))
    assert refused is not None, "the spool took more than its budget"
    assert refused.status_code == 503
    assert (
        "capture spool" in refused.body["message"]
        and "CAPTURE_SPOOL_MAX_BYTES" in (refused.body["message"])
    )
    assert refused.response.headers["Retry-After"] == "1"
    # What was accepted fits the budget at its worst case; capture off is still served.
    assert 1 <= len(accepted) <= SPOOL_MAX_BYTES // (16 * ROW_BYTES)
    uncaptured = client.completions.create(model=model, prompt="No capture", max_tokens=1,
                                           extra_body={"capture": False})  # fmt: skip
    assert uncaptured.choices and "activations" not in (uncaptured.model_extra or {})

    health = httpx.get(f"{stack.config.gateway_url}/health").json()["inference"]
    assert health["spool_max_bytes"] == SPOOL_MAX_BYTES
    assert health["refused_captures"] >= 1
    assert health["spool_records"] == len(accepted)
    metrics = scrape(f"http://127.0.0.1:{stack.config.inference_metrics_port}/metrics")
    assert total(metrics, "actlog_capture_refused_total") >= 1
    assert total(metrics, "actlog_capture_spool_max_bytes") == SPOOL_MAX_BYTES

    # Storage comes up: every record id a response returned arrives, complete.
    stack.start_service("storage")
    stack.wait_healthy(timeout=60, names=("storage",))
    with StorageClient(stack.config.storage_addr) as storage:
        for prompt, record_ids in accepted:
            [record] = storage.wait_for_record(prompt_hash(prompt), timeout=120)
            assert [record.record_id] == record_ids
            assert record.num_layers + 1 == len(record.layers) == 31
    # Delivered records free the budget: capture is accepted again.
    deadline = time.monotonic() + 30
    while httpx.get(f"{stack.config.gateway_url}/health").json()["inference"]["spool_records"]:
        assert time.monotonic() < deadline, "delivered records stay in the spool"
        time.sleep(0.2)
    again = client.completions.create(model=model, prompt="After delivery:", max_tokens=4,
                                      extra_body={"capture_layers": "all"})  # fmt: skip
    assert again.model_extra["activations"][0]["record_ids"]
