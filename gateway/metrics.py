"""The gateway's Prometheus metrics, served at `GET /metrics` (prometheus_client's own format).

Names follow Prometheus' conventions (`_total`, `_seconds`); request counts carry the
endpoint and status code, as vLLM's HTTP metrics do. Health and metrics scrapes are not
counted, so the counters say what clients asked for.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actlog_common.metrics import MetricSpec

ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/v1/models")
# Statuses that mean "refused before any work": auth, size, concurrency, inference down.
REJECTIONS = {401: "unauthorized", 413: "too_large", 429: "too_many_requests", 503: "unavailable"}
# Generation takes seconds to minutes on CPU: buckets up to the 600 s request timeout.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)


GATEWAY_METRICS = (
    REQUESTS := MetricSpec(
        "actlog_gateway_requests", "counter",
        "HTTP requests answered, by endpoint and status code (499: the client went away)",
        ("endpoint", "status"),
    ),
    LATENCY := MetricSpec(
        "actlog_gateway_request_duration_seconds", "histogram",
        "Time from request to the last byte of the response (streams included)",
        ("endpoint",), LATENCY_BUCKETS,
    ),
    TTFT := MetricSpec(
        "actlog_gateway_time_to_first_token_seconds", "histogram",
        "Time from sending a prompt to inference to its first generated token",
        buckets=TTFT_BUCKETS,
    ),
    PROMPT_TOKENS := MetricSpec(
        "actlog_gateway_prompt_tokens", "counter", "Prompt tokens processed"
    ),
    GENERATION_TOKENS := MetricSpec(
        "actlog_gateway_generation_tokens", "counter", "Tokens generated"
    ),
    IN_FLIGHT := MetricSpec(
        "actlog_gateway_requests_in_flight", "gauge",
        "Generations (responses or streams) in progress",
    ),
    REJECTED := MetricSpec(
        "actlog_gateway_rejected_requests", "counter",
        "Requests refused: 401 unauthorized, 413 too large, 429 too many, 503 unavailable",
        ("status", "reason"),
    ),
)  # fmt: skip


class GatewayMetrics:
    """One registry per app, so several gateways in one process never share counters."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = REQUESTS.register(r)
        self.latency = LATENCY.register(r)
        self.ttft = TTFT.register(r)
        self.prompt_tokens = PROMPT_TOKENS.register(r)
        self.generation_tokens = GENERATION_TOKENS.register(r)
        self.in_flight = IN_FLIGHT.register(r)
        self.rejections = REJECTED.register(r)
        for status, reason in REJECTIONS.items():
            self.rejections.labels(str(status), reason)

    def observe_tokens(self, prompt: int, generated: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.generation_tokens.inc(generated)


class MetricsMiddleware:
    """Counts every answered request and times it to the end of its body (plain ASGI, so a
    stream is timed until its last chunk, and the guards' own 401/413 are seen too)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in ENDPOINTS:
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"]
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            m = self.metrics
            m.requests.labels(endpoint, str(status)).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - started)
            if status in REJECTIONS:
                m.rejections.labels(str(status), REJECTIONS[status]).inc()
