"""The gateway's Prometheus metrics, served at `GET /metrics` (prometheus_client's own format).

Names follow Prometheus' conventions (`_total`, `_seconds`); request counts carry the
endpoint and status code, as vLLM's HTTP metrics do. Health and metrics scrapes are not
counted, so the counters say what clients asked for.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENDPOINTS = ("/v1/completions", "/v1/chat/completions", "/v1/models")
# Statuses that mean "refused before any work": auth, size, concurrency, inference down.
REJECTIONS = {401: "unauthorized", 413: "too_large", 429: "too_many_requests", 503: "unavailable"}
# Generation takes seconds to minutes on CPU: buckets up to the 600 s request timeout.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)


class GatewayMetrics:
    """One registry per app, so several gateways in one process never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "actlog_gateway_requests", "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "actlog_gateway_request_duration_seconds",
            "Time from request to the last byte of the response (streams included)",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "actlog_gateway_time_to_first_token_seconds",
            "Time from sending a prompt to inference to its first generated token",
            buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "actlog_gateway_prompt_tokens", "Prompt tokens processed", registry=r
        )
        self.generation_tokens = Counter(
            "actlog_gateway_generation_tokens", "Tokens generated", registry=r
        )
        self.in_flight = Gauge(
            "actlog_gateway_requests_in_flight",
            "Generations (responses or streams) in progress", registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            "actlog_gateway_rejected_requests",
            "Requests refused: 401 unauthorized, 413 too large, 429 too many, 503 unavailable",
            ["status", "reason"], registry=r,
        )  # fmt: skip
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
