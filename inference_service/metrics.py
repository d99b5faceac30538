"""The inference service's Prometheus metrics: vLLM's engine metrics and the capture pipeline.

vLLM's own stat logger registers its metrics (`vllm:num_requests_running`,
`vllm:time_to_first_token_seconds`, `vllm:generation_tokens_total`...) in prometheus_client's
default registry; the capture pipeline's are read from the engine at each scrape, so a scrape
always shows the spool as it is. Both are served over HTTP on INFERENCE_METRICS_PORT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from actlog_common.metrics import MetricSpec
from inference_service.errors import StartupError

if TYPE_CHECKING:
    from inference_service.engine import CaptureEngine

logger = logging.getLogger(__name__)


def _gauge(name: str, doc: str) -> MetricSpec:
    return MetricSpec(name, "gauge", doc)


def _counter(name: str, doc: str) -> MetricSpec:
    return MetricSpec(name, "counter", doc)


# Each metric of the capture pipeline, and how it is read off the engine at a scrape (with
# the spool's (records, bytes), scanned once per scrape).
_READ: tuple[tuple[MetricSpec, Callable[[CaptureEngine, tuple[int, int]], float]], ...] = (
    (_gauge("actlog_capture_pending", "Requests whose rows are still arriving"),
     lambda e, _: e.collector.pending),
    (_gauge("actlog_capture_queued_records", "Finished records queued to send"),
     lambda e, _: e.sink.backlog),
    (_gauge("actlog_capture_spool_records", "Finished records in the on-disk spool"),
     lambda e, spool: spool[0]),
    (_gauge("actlog_capture_spool_bytes", "Bytes in the on-disk spool (all captures)"),
     lambda e, spool: spool[1]),
    (_gauge("actlog_capture_spool_max_bytes", "The spool's budget (CAPTURE_SPOOL_MAX_BYTES)"),
     lambda e, _: e.spool.max_bytes),
    (_gauge("actlog_capture_spool_reserved_bytes",
            "Spool bytes reserved by captures in flight (their worst case)"),
     lambda e, _: e.spool.reserved_bytes),
    (_gauge("actlog_capture_spool_oldest_age_seconds",
            "Age of the oldest finished record not yet stored"),
     lambda e, _: e.spool.oldest_age_s()),
    (_gauge("actlog_capture_dead_letter_records",
            "Records storage would not take, moved aside (actlog dead-letters)"),
     lambda e, _: e.spool.dead_letter_count()),
    (_gauge("actlog_capture_storage_reachable",
            "1 unless the last attempt to reach storage failed"),
     lambda e, _: int(e.sink.reachable)),
    (_counter("actlog_capture_rows", "Rows (positions x layers) captured"),
     lambda e, _: e.collector.captured_rows),
    (_counter("actlog_capture_recomputed_rows",
              "Rows received again for positions already held (preemption)"),
     lambda e, _: e.collector.recomputed_rows),
    (_counter("actlog_capture_records_delivered", "Records acknowledged by storage"),
     lambda e, _: e.sink.stored),
    (_counter("actlog_capture_storage_failures", "Failed attempts to send a record"),
     lambda e, _: e.sink.failures),
    (_counter("actlog_capture_refused",
              "Captured requests refused (503): the spool could not take them"),
     lambda e, _: e.spool.refused),
)  # fmt: skip
FRAMES_DROPPED = MetricSpec(
    "actlog_capture_frames_dropped", "counter",
    "Rows of a request and step not filed: of finished requests, or malformed", ("reason",),
)  # fmt: skip
CAPTURE_PATH = MetricSpec(
    "actlog_capture_path", "gauge",
    "1 for the capture path the engine runs (compiled or eager) and why", ("path", "reason"),
)  # fmt: skip
# What this service adds to vLLM's own metrics (the docs' table is generated from it).
CAPTURE_METRICS = (*(spec for spec, _ in _READ), FRAMES_DROPPED, CAPTURE_PATH)


class CapturePipelineCollector(Collector):
    """The capture pipeline's state, read when scraped."""

    def __init__(self, engine: CaptureEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        e = self._engine
        spool = e.spool.usage()
        for spec, read in _READ:
            yield spec.family(read(e, spool))
        dropped = FRAMES_DROPPED.family()
        for reason, count in e.collector.dropped_frames.items():
            dropped.add_metric([reason], count)
        yield dropped
        if e.capture_path is not None:
            # Info-style: which capture path the engine runs, and why.
            path = CAPTURE_PATH.family()
            path.add_metric([e.capture_path.name, e.capture_path.reason], 1)
            yield path


def serve_metrics(engine: CaptureEngine, host: str, port: int) -> None:
    """Serve the default registry (vLLM's metrics) plus the capture pipeline's on host:port."""
    REGISTRY.register(CapturePipelineCollector(engine))
    if not port:
        return
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as error:
        raise StartupError(
            f"inference could not serve metrics on {host}:{port} (INFERENCE_METRICS_PORT): "
            f"{error.strerror or error}"
        ) from error
    logger.info("metrics on http://%s:%d/metrics", host, port)
