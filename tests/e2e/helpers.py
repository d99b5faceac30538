"""What the end-to-end tests share beside their fixtures (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from actlog.launcher import Stack, StackConfig, free_port


def extra_gateway(stack: Stack, tmp: Path, **env: str) -> Stack:
    """Another gateway process on the session's inference service, with its own settings."""
    config = StackConfig(
        gateway_port=free_port(),
        inference_port=stack.config.inference_port,
        log_dir=str(tmp),
        extra_env=env,
    )
    gateway = Stack(config)
    gateway.start_service("gateway")
    gateway.wait_healthy(timeout=60, names=("gateway",))
    return gateway


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics page by (name, labels)."""
    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= lbl)
