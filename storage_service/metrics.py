"""The storage service's Prometheus metrics, served over HTTP on STORAGE_METRICS_PORT.

What is stored (records, bytes, LMDB map size and use) is read from the store's counters at
each scrape, so it is exact after restarts; ingest and read traffic is counted and timed as
calls finish.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from actlog_common.metrics import MetricSpec
from actlog_common.v1 import storage_pb2
from storage_service.queries import StoreStats

logger = logging.getLogger(__name__)

T = TypeVar("T")
# An ingest or read moves a few MiB per layer on a 135M model, up to GiB on large ones.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _stored(name: str, doc: str, read: Callable[[StoreStats], float]) -> tuple[MetricSpec, Any]:
    return MetricSpec(name, "gauge", doc), read


# What is stored, read off the store's counters at each scrape.
_STORED = (
    _stored("actlog_storage_records", "Records stored, complete or partial", lambda s: s.records),
    _stored("actlog_storage_complete_records", "Records stored complete",
            lambda s: s.complete_records),
    _stored("actlog_storage_activation_bytes", "Activation bytes of the records (uncompressed)",
            lambda s: s.activation_bytes),
    _stored("actlog_storage_stored_bytes", "Activation bytes on disk, after compression",
            lambda s: s.stored_bytes),
    _stored("actlog_storage_prompt_hashes", "Distinct prompt hashes", lambda s: s.prompt_hashes),
    _stored("actlog_storage_lmdb_map_size_bytes", "LMDB map size (it doubles whenever it fills)",
            lambda s: s.lmdb_map_size),
    _stored("actlog_storage_lmdb_used_bytes", "LMDB pages in use, in bytes",
            lambda s: s.lmdb_used_bytes),
)  # fmt: skip
DISK_FREE = MetricSpec(
    "actlog_storage_disk_free_bytes", "gauge", "Free bytes on the LMDB directory's disk"
)
MODEL_RECORDS = MetricSpec(
    "actlog_storage_model_records", "gauge", "Records stored per model", ("model",)
)
INGESTED = MetricSpec(
    "actlog_storage_ingested_records", "counter",
    "Ingest calls answered, by the record's status", ("status",),
)  # fmt: skip
INGEST_BYTES = MetricSpec(
    "actlog_storage_ingest_bytes", "counter", "Activation bytes written by Ingest"
)
INGEST_DURATION = MetricSpec(
    "actlog_storage_ingest_duration_seconds", "histogram", "Time of one Ingest call",
    buckets=DURATION_BUCKETS,
)  # fmt: skip
READ_BYTES = MetricSpec(
    "actlog_storage_read_bytes", "counter",
    "Activation bytes read, by transport (stream or shm)", ("transport",),
)  # fmt: skip
READ_DURATION = MetricSpec(
    "actlog_storage_read_duration_seconds", "histogram",
    "Time of one activation read, to its last chunk", ("transport",), DURATION_BUCKETS,
)  # fmt: skip
EXPIRED_PARTIAL = MetricSpec(
    "actlog_storage_expired_partial_records", "counter",
    "PARTIAL records deleted after STORAGE_PARTIAL_TTL_S without a write",
)  # fmt: skip
FEATURE_VECTORS = MetricSpec(
    "actlog_storage_feature_vectors", "counter",
    "Pooled vectors the Features RPC computed (records x layers)",
)  # fmt: skip
FEATURES_DURATION = MetricSpec(
    "actlog_storage_features_duration_seconds", "histogram",
    "Time of one Features call, to its last batch", buckets=DURATION_BUCKETS,
)  # fmt: skip
# Every metric storage serves (the docs' table is generated from it).
STORAGE_METRICS = (
    *(spec for spec, _ in _STORED), DISK_FREE, MODEL_RECORDS, INGESTED, INGEST_BYTES,
    INGEST_DURATION, READ_BYTES, READ_DURATION, EXPIRED_PARTIAL, FEATURE_VECTORS,
    FEATURES_DURATION,
)  # fmt: skip


class _StoredCollector(Collector):
    def __init__(self, stats: Callable[[], StoreStats], lmdb_path: str) -> None:
        self._stats = stats
        self._path = lmdb_path

    def collect(self) -> Iterator[Metric]:
        try:
            s = self._stats()
        except Exception:  # noqa: BLE001 (the store is closing: report nothing, not an error)
            return
        for spec, read in _STORED:
            yield spec.family(read(s))
        with contextlib.suppress(OSError):
            yield DISK_FREE.family(shutil.disk_usage(self._path).free)
        per_model = MODEL_RECORDS.family()
        for model, counts in s.models.items():
            per_model.add_metric([model], counts.records)
        yield per_model


class StorageMetrics:
    """One registry per server, so servers in one process (tests) never share counters."""

    def __init__(self, stats: Callable[[], StoreStats], lmdb_path: str) -> None:
        self.registry = r = CollectorRegistry()
        r.register(_StoredCollector(stats, lmdb_path))
        self.ingested_records = INGESTED.register(r)
        self.ingest_bytes = INGEST_BYTES.register(r)
        self.ingest_duration = INGEST_DURATION.register(r)
        self.read_bytes = READ_BYTES.register(r)
        self.read_duration = READ_DURATION.register(r)
        self.expired_partial = EXPIRED_PARTIAL.register(r)
        self.feature_vectors = FEATURE_VECTORS.register(r)
        self.features_duration = FEATURES_DURATION.register(r)
        for transport in ("stream", "shm"):
            self.read_bytes.labels(transport)
            self.read_duration.labels(transport)

    def timed_read(self, transport: str, nbytes: int, chunks: Iterator[T]) -> Iterator[T]:
        """`chunks`, counted and timed once the caller has taken the last one."""
        started = time.perf_counter()
        yield from chunks
        self.read_duration.labels(transport).observe(time.perf_counter() - started)
        self.read_bytes.labels(transport).inc(nbytes)

    def timed_features(
        self, batches: Iterator[storage_pb2.FeaturesBatch]
    ) -> Iterator[storage_pb2.FeaturesBatch]:
        """`batches`, their vectors counted and the call timed once the last is taken."""
        started = time.perf_counter()
        for batch in batches:
            self.feature_vectors.inc(len(batch.records) * len(batch.layers))
            yield batch
        self.features_duration.observe(time.perf_counter() - started)

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Serve /metrics on host:port (0: not at all); returns how to stop serving."""
        if not port:
            return lambda: None
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            raise RuntimeError(
                f"storage could not serve metrics on {host}:{port} (STORAGE_METRICS_PORT): "
                f"{error.strerror or error}"
            ) from error
        logger.info("metrics on http://%s:%d/metrics", host, server.server_port)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop
