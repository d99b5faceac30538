"""Schemathesis against the gateway's own OpenAPI schema: valid and invalid requests generated
by the hundred, every answer is not a 5xx, every error is in OpenAI's shape, and the services
stay up. The gateway under test caps max_tokens and batch size so valid requests stay cheap."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.e2e.helpers import extra_gateway

pytestmark = pytest.mark.vllm

# (mode, examples) per operation; about 300 requests in all.
PLAN = {
    ("POST", "/v1/completions"): [(GenerationMode.POSITIVE, 70), (GenerationMode.NEGATIVE, 60)],
    ("POST", "/v1/chat/completions"): [
        (GenerationMode.POSITIVE, 70),
        (GenerationMode.NEGATIVE, 60),
    ],
    ("GET", "/v1/models"): [(GenerationMode.POSITIVE, 10)],
    ("GET", "/health"): [(GenerationMode.POSITIVE, 10)],
}


@pytest.fixture(scope="module")
def fuzz_gateway(stack, tmp_path_factory):
    gateway = extra_gateway(
        stack,
        tmp_path_factory.mktemp("fuzz"),
        MAX_TOKENS_LIMIT="4",
        MAX_BATCH_PROMPTS="2",
        MAX_BODY_BYTES=str(64 * 1024),
    )
    yield gateway.config.gateway_url
    gateway.stop()


def test_no_request_makes_the_gateway_fail(fuzz_gateway, stack):
    schema = schemathesis.openapi.from_url(f"{fuzz_gateway}/openapi.json")
    operations = {
        (op.method.upper(), op.path): op for op in (r.ok() for r in schema.get_all_operations())
    }
    assert set(PLAN) <= set(operations), sorted(operations)
    seen: dict[int, int] = {}
    with httpx.Client(base_url=fuzz_gateway, timeout=120) as client:
        for key, modes in PLAN.items():
            for mode, examples in modes:
                fuzz(operations[key], mode, examples, client, seen)()
    assert sum(seen.values()) >= 250, seen
    assert seen.get(200, 0) > 20 and sum(v for k, v in seen.items() if k >= 400) > 20, seen
    # Still up, still answering.
    assert httpx.get(f"{fuzz_gateway}/health").json()["inference"]["status"] == "ok"
    assert httpx.post(
        f"{stack.config.gateway_url}/v1/completions",
        json={"model": "default", "prompt": "still there?", "max_tokens": 1}, timeout=60,
    ).status_code == 200  # fmt: skip


def fuzz(operation, mode, examples: int, client: httpx.Client, seen: dict[int, int]):
    """A hypothesis test sending `examples` generated requests for one operation."""
    positive = mode is GenerationMode.POSITIVE

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    def check(case) -> None:
        if positive and isinstance(case.body, dict):
            # Random model names only ever meet 404; aim the rest deeper.
            case.body["model"] = "default"
        body = _body(case)
        headers = dict(case.headers or {})
        if body is not None:
            headers["Content-Type"] = "application/json"
        reply = client.request(
            case.method, case.formatted_path, params=case.query, headers=headers, content=body
        )
        seen[reply.status_code] = seen.get(reply.status_code, 0) + 1
        assert reply.status_code < 500, (case.body, reply.text)
        if reply.status_code >= 400:
            error = reply.json()["error"]
            assert error["message"] and error["type"], reply.text

    return check


def _body(case) -> bytes | None:
    if case.body is None or not isinstance(case.body, (dict, list, str, int, float, bool)):
        return None
    return json.dumps(case.body).encode()
