"""Streams finished captures from the spool to the storage service, off the response path.

Finished records are announced on a bounded queue; one sender task streams each as a header,
~1 MiB chunks read from its spool files, and a commit carrying a SHA-256 of the chunk data,
then deletes it from the spool. When storage is slow or down the sender retries the same
record with back-off (order is kept) and records pile up on disk, not in memory; when the
queue is full, new records wait in the spool and a rescan picks them up later. Ingest is
idempotent, so a record whose stream broke is simply sent again, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterator

import grpc

from actlog_common.defaults import message_size_options
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from inference_service.capture.spool import Spool, SpooledRecord

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# Storage down, restarting or out of disk: every record waits alike, so these are retried
# for as long as they last; any other failure counts against a record's attempts.
TRANSIENT = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
})  # fmt: skip


def ingest_messages(record: SpooledRecord) -> Iterator[storage_pb2.IngestRequest]:
    header = record.header
    yield storage_pb2.IngestRequest(header=header)
    n_rows = header.num_positions
    row_bytes = record.row_bytes
    rows_per_chunk = max(1, CHUNK_BYTES // row_bytes)
    digest = hashlib.sha256()
    sequence = 0
    for layer in header.layers:
        with open(record.layer_path(layer), "rb") as f:
            for row in range(0, n_rows, rows_per_chunk):
                count = min(rows_per_chunk, n_rows - row)
                piece = f.read(count * row_bytes)
                if len(piece) != count * row_bytes:
                    raise ValueError(f"spooled layer {layer} of {record.record_id} is truncated")
                digest.update(piece)
                yield storage_pb2.IngestRequest(
                    chunk=storage_pb2.ActivationChunk(
                        record_id=record.record_id,
                        sequence=sequence,
                        layer=layer,
                        row_start=row,
                        row_count=count,
                        data=piece,
                    )
                )
                sequence += 1
    yield storage_pb2.IngestRequest(
        commit=storage_pb2.IngestCommit(
            record_id=record.record_id, num_chunks=sequence, sha256=digest.hexdigest()
        )
    )


class RecordSink:
    """Bounded queue + sender task over the spool; `submit` never blocks the caller."""

    RESCAN_S = 2.0

    def __init__(
        self,
        spool: Spool,
        storage_addr: str,
        max_message_bytes: int = 64 << 20,
        queue_size: int = 1024,
        max_attempts: int = 5,
        security: GrpcSecurity | None = None,
    ) -> None:
        self._spool = spool
        self._security = security or GrpcSecurity()
        self._max_attempts = max_attempts
        self._addr = storage_addr
        self._options = message_size_options(max_message_bytes)
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._queued: set[str] = set()
        self._overflow = False
        self._tasks: list[asyncio.Task[None]] = []
        self._channel: grpc.aio.Channel | None = None
        self.stored = 0
        self.failures = 0
        self.reachable = True
        self.last_error = ""

    async def start(self) -> None:
        self._channel = self._security.aio_channel(self._addr, options=self._options)
        backlog = self._spool.ready()
        if backlog:
            logger.info("replaying %d spooled records to storage", len(backlog))
        for record_id in backlog:
            self.submit(record_id)
        self._tasks = [
            asyncio.create_task(self._send_forever()),
            asyncio.create_task(self._rescan_forever()),
        ]

    def submit(self, record_id: str) -> None:
        if record_id in self._queued:
            return
        try:
            self._queue.put_nowait(record_id)
            self._queued.add(record_id)
        except asyncio.QueueFull:
            # The record is safe in the spool; the rescan queues it when there is room.
            if not self._overflow:
                logger.warning("send queue full; records wait in the spool")
            self._overflow = True

    def retry_dead_letters(self, record_ids: list[str] | None = None) -> list[str]:
        """Put dead letters (all, or those named) back in line; the ids requeued."""
        wanted = record_ids or [rid for rid, _ in self._spool.dead_letters()]
        revived = [rid for rid in wanted if self._spool.revive(rid)]
        for record_id in revived:
            self.submit(record_id)
        return revived

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def drain(self, timeout: float) -> bool:
        """Wait until the spool is empty (or the timeout passes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._spool.ready():
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._channel is not None:
            await self._channel.close()

    async def _rescan_forever(self) -> None:
        while True:
            await asyncio.sleep(self.RESCAN_S)
            if self._overflow and not self._queue.full():
                self._overflow = False
                for record_id in self._spool.ready():
                    self.submit(record_id)

    async def _send_forever(self) -> None:
        assert self._channel is not None
        stub = storage_pb2_grpc.StorageStub(self._channel)
        while True:
            record_id = await self._queue.get()
            await self._send_until_stored(stub, record_id)
            self._queued.discard(record_id)
            self._queue.task_done()

    async def _send_until_stored(self, stub: storage_pb2_grpc.StorageStub, record_id: str) -> None:
        delay = 0.2
        attempts = 0
        while True:
            try:
                record = self._spool.load(record_id)
            except FileNotFoundError:
                return  # already sent by an earlier pass
            try:
                await stub.Ingest(ingest_messages(record), timeout=120)
            except grpc.aio.AioRpcError as exc:
                self.failures += 1
                attempts += 1
                code = exc.code()
                self.last_error = f"{code.name}: {exc.details()}"
                if code == grpc.StatusCode.INVALID_ARGUMENT or (
                    code not in TRANSIENT and attempts >= self._max_attempts
                ):
                    # Retrying cannot help (or did not, this many times): move it aside,
                    # data kept for inspection and `actlog dead-letters --retry`, so the
                    # records behind it are delivered.
                    reason = f"{code.name} after {attempts} attempts: {exc.details()}"
                    where = self._spool.dead_letter(record_id, reason)
                    logger.error("record %s is a dead letter at %s: %s", record_id, where, reason)
                    return
                if self.reachable:
                    logger.warning(
                        "storage unreachable (%s); records wait in the spool", exc.code().name
                    )
                self.reachable = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not self.reachable:
                logger.info("storage reachable again; replaying the spool")
            self.reachable = True
            self.last_error = ""
            self.stored += 1
            self._spool.remove(record_id)
            return
