"""The inference service's Prometheus metrics: vLLM's engine metrics and the capture pipeline.

vLLM's own stat logger registers its metrics (`vllm:num_requests_running`,
`vllm:time_to_first_token_seconds`, `vllm:generation_tokens_total`...) in prometheus_client's
default registry; the capture pipeline's are read from the engine at each scrape, so a scrape
always shows the spool as it is. Both are served over HTTP on INFERENCE_METRICS_PORT.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inference_service.errors import StartupError

if TYPE_CHECKING:
    from inference_service.engine import CaptureEngine

logger = logging.getLogger(__name__)


class CapturePipelineCollector(Collector):
    """The capture pipeline's state, read when scraped."""

    def __init__(self, engine: CaptureEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        e = self._engine
        records, size = e.spool.usage()
        gauges = {
            "actlog_capture_pending": (
                "Requests whose rows are still arriving",
                e.collector.pending,
            ),
            "actlog_capture_queued_records": ("Finished records queued to send", e.sink.backlog),
            "actlog_capture_spool_records": ("Finished records in the on-disk spool", records),
            "actlog_capture_spool_bytes": ("Bytes in the on-disk spool (all captures)", size),
            "actlog_capture_spool_max_bytes": (
                "The spool's budget (CAPTURE_SPOOL_MAX_BYTES)",
                e.spool.max_bytes,
            ),
            "actlog_capture_spool_reserved_bytes": (
                "Spool bytes reserved by captures in flight (their worst case)",
                e.spool.reserved_bytes,
            ),
            "actlog_capture_spool_oldest_age_seconds": (
                "Age of the oldest finished record not yet stored",
                e.spool.oldest_age_s(),
            ),
            "actlog_capture_dead_letter_records": (
                "Records storage would not take, moved aside (actlog dead-letters)",
                e.spool.dead_letter_count(),
            ),
            "actlog_capture_storage_reachable": (
                "1 unless the last attempt to reach storage failed",
                int(e.sink.reachable),
            ),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "actlog_capture_rows": (
                "Rows (positions x layers) captured",
                e.collector.captured_rows,
            ),
            "actlog_capture_recomputed_rows": (
                "Rows received again for positions already held (preemption)",
                e.collector.recomputed_rows,
            ),
            "actlog_capture_records_delivered": ("Records acknowledged by storage", e.sink.stored),
            "actlog_capture_storage_failures": (
                "Failed attempts to send a record",
                e.sink.failures,
            ),
            "actlog_capture_refused": (
                "Captured requests refused (503): the spool could not take them",
                e.spool.refused,
            ),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        dropped = CounterMetricFamily(
            "actlog_capture_frames_dropped",
            "Rows of a request and step not filed: of finished requests, or malformed",
            labels=["reason"],
        )
        for reason, count in e.collector.dropped_frames.items():
            dropped.add_metric([reason], count)
        yield dropped
        if e.capture_path is not None:
            # Info-style: which capture path the engine runs, and why.
            path = GaugeMetricFamily(
                "actlog_capture_path",
                "1 for the capture path the engine runs (compiled or eager) and why",
                labels=["path", "reason"],
            )
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
