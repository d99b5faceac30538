"""Every service's /metrics parses with prometheus_client's own parser, and its counters equal
what the test sent: a fresh gateway's requests, tokens and rejections; the inference service's
vLLM engine metrics and capture pipeline; storage's records, ingests and reads."""

from __future__ import annotations

import httpx
import openai
import pytest

from actlog_common.hashing import prompt_hash
from tests.e2e.helpers import extra_gateway, scrape, total

pytestmark = pytest.mark.vllm


def metrics_urls(stack) -> dict[str, str]:
    c = stack.config
    return {
        "inference": f"http://{c.inference_host}:{c.inference_metrics_port}/metrics",
        "storage": f"http://{c.storage_host}:{c.storage_metrics_port}/metrics",
    }


def test_gateway_metrics_count_what_clients_sent(stack, served_model, tmp_path):
    gateway = extra_gateway(stack, tmp_path, MAX_BODY_BYTES="3000")
    url = gateway.config.gateway_url
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=300)
    try:
        usage = []
        for i in range(2):
            reply = client.completions.create(
                model=served_model, prompt=f"Metrics {i}:", max_tokens=3, temperature=0
            )
            usage.append(reply.usage)
        stream = client.chat.completions.create(
            model=served_model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
            stream=True, stream_options={"include_usage": True},
        )  # fmt: skip
        usage += [chunk.usage for chunk in stream if chunk.usage]
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        too_big = httpx.post(f"{url}/v1/completions", json={"model": "m", "prompt": "x" * 4000})
        assert too_big.status_code == 413
        client.models.list()
        httpx.get(f"{url}/health")  # health and metrics scrapes are not counted

        m = scrape(f"{url}/metrics")
        requests = "actlog_gateway_requests_total"
        assert total(m, requests, endpoint="/v1/completions", status="200") == 2
        assert total(m, requests, endpoint="/v1/chat/completions", status="200") == 1
        assert total(m, requests, endpoint="/v1/completions", status="404") == 1
        assert total(m, requests, endpoint="/v1/completions", status="413") == 1
        assert total(m, requests, endpoint="/v1/models", status="200") == 1
        assert total(m, requests) == 6
        assert total(m, "actlog_gateway_rejected_requests_total", status="413") == 1
        assert total(m, "actlog_gateway_rejected_requests_total") == 1
        assert total(m, "actlog_gateway_prompt_tokens_total") == sum(u.prompt_tokens for u in usage)
        generated = sum(u.completion_tokens for u in usage)
        assert total(m, "actlog_gateway_generation_tokens_total") == generated
        assert total(m, "actlog_gateway_time_to_first_token_seconds_count") == 3
        assert total(m, "actlog_gateway_request_duration_seconds_count") == 6
        latency = total(
            m, "actlog_gateway_request_duration_seconds_sum", endpoint="/v1/completions"
        )
        assert latency > 0
        assert total(m, "actlog_gateway_requests_in_flight") == 0
    finally:
        gateway.stop()


def test_inference_and_storage_metrics_follow_the_requests(
    stack, openai_client, served_model, storage
):
    urls = metrics_urls(stack)
    before = {name: scrape(url) for name, url in urls.items()}
    prompts = [f"Counted prompt {i}." for i in range(3)]
    replies = [
        openai_client.completions.create(
            model=served_model,
            prompt=p,
            max_tokens=4,
            temperature=0,
            extra_body={"capture_layers": [0, -1]},
        )  # fmt: skip
        for p in prompts
    ]
    uncaptured = openai_client.completions.create(
        model=served_model, prompt="Not captured.", max_tokens=2, extra_body={"capture": False}
    )
    records = [storage.wait_for_record(prompt_hash(p), timeout=120)[0] for p in prompts]
    read = storage.get_activations(records[0], as_float32=False)
    after = {name: scrape(url) for name, url in urls.items()}

    def delta(service: str, name: str, **labels: str) -> float:
        return total(after[service], name, **labels) - total(before[service], name, **labels)

    # vLLM's own engine metrics, under their usual names.
    assert delta("inference", "vllm:request_success_total") == 4
    generated = sum(r.usage.completion_tokens for r in replies) + uncaptured.usage.completion_tokens
    assert delta("inference", "vllm:generation_tokens_total") == generated
    prompt_tokens = sum(r.usage.prompt_tokens for r in replies) + uncaptured.usage.prompt_tokens
    assert delta("inference", "vllm:prompt_tokens_total") == prompt_tokens
    assert total(after["inference"], "vllm:num_requests_running") == 0
    # The capture pipeline: every captured record delivered, nothing left behind.
    assert delta("inference", "actlog_capture_records_delivered_total") == 3
    rows = sum(2 * r.num_positions for r in records)
    assert delta("inference", "actlog_capture_rows_total") == rows
    for gauge in ("pending", "queued_records", "spool_records", "spool_oldest_age_seconds"):
        assert total(after["inference"], f"actlog_capture_{gauge}") == 0, gauge
    assert total(after["inference"], "actlog_capture_storage_reachable") == 1
    assert delta("inference", "actlog_capture_frames_dropped_total", reason="malformed") == 0
    assert total(after["inference"], "actlog_capture_path", path="eager") == 1
    # Storage: the records, their bytes, the ingests and the read.
    assert delta("storage", "actlog_storage_records") == 3
    assert delta("storage", "actlog_storage_complete_records") == 3
    stored = sum(r.activation_bytes for r in records)
    assert delta("storage", "actlog_storage_activation_bytes") == stored
    assert delta("storage", "actlog_storage_ingested_records_total", status="complete") == 3
    assert delta("storage", "actlog_storage_ingest_bytes_total") == stored
    assert delta("storage", "actlog_storage_ingest_duration_seconds_count") == 3
    transport = storage.activation_transport
    read_bytes = sum(a.nbytes for a in read.values())
    assert delta("storage", "actlog_storage_read_bytes_total", transport=transport) == read_bytes
    assert delta("storage", "actlog_storage_read_duration_seconds_count") == 1
    used = total(after["storage"], "actlog_storage_lmdb_used_bytes")
    assert 0 < used <= total(after["storage"], "actlog_storage_lmdb_map_size_bytes")
