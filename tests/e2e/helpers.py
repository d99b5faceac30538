"""What the end-to-end tests share beside their fixtures (tests/conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
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


def banner_of(proc: subprocess.Popen[str], logs: list[Path]) -> str:
    """What a launcher (`actlog up` and the like) printed until it was up; the test fails
    with that and the tails of `logs` if it never came up."""
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line or "did not come up" in line:
            break
    banner = "".join(lines)
    if "Press Ctrl-C" not in banner:
        proc.kill()
        tails = "".join(p.read_text()[-3000:] for p in logs if p.is_file())
        pytest.fail(f"the stack did not come up:\n{banner}\n{tails}")
    return banner
