"""gRPC server of the storage service: wiring, health, reflection, graceful shutdown."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actlog_common.defaults import (
    BULK_STREAM_OPTIONS,
    SERVER_OPTIONS,
    STORAGE_GRACE_S,
    configure_logging,
    message_size_options,
)
from actlog_common.grpc_security import GrpcSecurity, TokenInterceptor
from actlog_common.parent import stop_with_launcher
from actlog_common.same_host import local_socket_path, private_directory, shm_supported
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.compression import Compression
from storage_service.config import StorageSettings, load_settings
from storage_service.errors import explain_lmdb_error
from storage_service.interceptors import CodecInterceptor, ErrorInterceptor
from storage_service.local_socket import LocalReadServer
from storage_service.malloc import tune_for_large_buffers
from storage_service.metrics import StorageMetrics
from storage_service.servicer import StorageServicer
from storage_service.shm import SegmentCache
from storage_service.store import ActivationStore
from storage_service.wire import decode_ingest_request

logger = logging.getLogger(__name__)

SERVICE_NAME = storage_pb2.DESCRIPTOR.services_by_name["Storage"].full_name
# Chunks come in as views into the received bytes and go out pre-encoded (wire.py).
BULK_CODECS = {
    f"/{SERVICE_NAME}/Ingest": {"request_deserializer": decode_ingest_request},
    f"/{SERVICE_NAME}/StreamActivations": {"response_serializer": bytes},
}


class StorageServer:
    """The running parts of one storage service: gRPC server, health and LMDB store."""

    def __init__(
        self,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        store: ActivationStore,
        segments: SegmentCache,
        metrics: StorageMetrics,
        local_reads: LocalReadServer | None = None,
        metrics_address: tuple[str, int] = ("127.0.0.1", 0),
        partial_ttl_s: float = 0.0,
    ) -> None:
        self.grpc_server = server
        self.health = health_servicer
        self.store = store
        self.segments = segments
        self.metrics = metrics
        self.local_reads = local_reads
        self._metrics_address = metrics_address
        self._stop_metrics = lambda: None
        self._partial_ttl_s = partial_ttl_s
        self._stopping = threading.Event()
        self._sweeper = threading.Thread(
            target=self._expire_partial_forever, name="partial-sweeper", daemon=True
        )

    def start(self) -> None:
        self.grpc_server.start()
        self._stop_metrics = self.metrics.serve(*self._metrics_address)
        if self.local_reads is not None and not self.local_reads.start():
            self.local_reads = None
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self._partial_ttl_s:
            self._sweeper.start()

    def _expire_partial_forever(self) -> None:
        """Delete PARTIAL records left by streams that died, every quarter of their TTL."""
        interval = min(max(self._partial_ttl_s / 4, 0.2), 60.0)
        while not self._stopping.wait(interval):
            try:
                expired = self.store.expire_partial(self._partial_ttl_s)
            except Exception:  # noqa: BLE001 (e.g. a full disk: try again next time)
                logger.exception("expiring partial records failed")
                continue
            if expired:
                self.metrics.expired_partial.inc(len(expired))
                logger.warning(
                    "deleted %d PARTIAL records not written for %.0f s (STORAGE_PARTIAL_TTL_S)",
                    len(expired), self._partial_ttl_s,
                )  # fmt: skip

    def stop(self, grace: float | None = STORAGE_GRACE_S) -> None:
        """Report NOT_SERVING, let calls in flight finish within `grace` s, close LMDB."""
        self.health.enter_graceful_shutdown()
        self._stopping.set()
        if self._sweeper.is_alive():
            self._sweeper.join(10)
        if self.local_reads is not None:
            self.local_reads.stop(grace or 0.0)  # before LMDB closes under its copies
        self.grpc_server.stop(grace).wait()
        self._stop_metrics()
        self.segments.close()
        self.store.close()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)


def _bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def create_server(settings: StorageSettings) -> tuple[StorageServer, int]:
    """Build (not start) the server; returns it and the bound port (settings may ask 0)."""
    store = ActivationStore(
        settings.activation_lmdb_path,
        settings.lmdb_map_size,
        Compression(settings.storage_compression),
        settings.storage_max_record_bytes,
        settings.storage_max_label_bytes,
    )
    options = [
        *message_size_options(settings.grpc_max_message_bytes),
        *BULK_STREAM_OPTIONS,
        *SERVER_OPTIONS,
    ]
    security = GrpcSecurity.of(settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.storage_max_workers, thread_name_prefix="storage-rpc"
        ),
        interceptors=[
            TokenInterceptor(security),
            CodecInterceptor(BULK_CODECS),
            ErrorInterceptor(lambda error: explain_lmdb_error(error, str(store.path))),
        ],
        options=options,
    )
    segments = SegmentCache(enabled=settings.storage_shm_reads)
    metrics = StorageMetrics(store.stats, str(store.path))
    servicer = StorageServicer(store, segments, metrics)
    storage_pb2_grpc.add_StorageServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = _bind_address(settings.storage_host, settings.storage_port)
    try:
        port = security.add_port(server, address)
    except (RuntimeError, OSError, ValueError) as error:
        store.close()
        raise RuntimeError(f"storage could not bind {address}: {error}") from error
    if port == 0:
        store.close()
        raise RuntimeError(f"storage could not bind {address} (is another server on it?)")
    local_reads = None
    if settings.storage_shm_reads and settings.storage_local_socket and shm_supported():
        try:
            private_directory()
            local_reads = LocalReadServer(local_socket_path(port), servicer.shm_read)
        except OSError as error:
            logger.warning("shared-memory reads over gRPC only: %s", error)
    storage = StorageServer(
        server, health_servicer, store, segments, metrics, local_reads,
        (settings.storage_host, settings.storage_metrics_port), settings.storage_partial_ttl_s,
    )  # fmt: skip
    return storage, port


def main(argv: Sequence[str] | None = None) -> None:
    tune_for_large_buffers()
    settings = load_settings(argv)
    configure_logging(settings.log_level)
    try:
        server, port = create_server(settings)
    except RuntimeError as error:
        logger.error("%s", error)
        sys.exit(f"storage: {error}")  # one line, not a traceback
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop_with_launcher()
    server.start()
    logger.info(
        "storage listening on %s (lmdb %s, map size %d bytes, compression %s)",
        _bind_address(settings.storage_host, port),
        settings.activation_lmdb_path,
        server.store.map_size,
        settings.storage_compression,
    )
    stopping.wait()
    server.stop(STORAGE_GRACE_S)
    logger.info("storage stopped")
