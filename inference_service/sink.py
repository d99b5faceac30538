"""Streams finished captures to the storage service, off the response path.

Records wait in a queue; one sender task streams each as header, ~1 MiB chunks and a commit
carrying a SHA-256 of the chunk data. Ingest is idempotent (record id + chunk sequence), so a
record whose stream broke is simply sent again, whole, after a back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterator

import grpc

from actlog.v1 import storage_pb2, storage_pb2_grpc
from inference_service.types import CapturedRecord

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


def ingest_messages(record: CapturedRecord) -> Iterator[storage_pb2.IngestRequest]:
    yield storage_pb2.IngestRequest(
        header=storage_pb2.RecordHeader(
            record_id=record.record_id,
            prompt_hash=record.prompt_hash,
            prompt=record.prompt,
            response=record.response,
            model=record.model,
            token_ids=record.token_ids,
            token_strings=record.token_strings,
            prompt_length=record.prompt_length,
            sampling_params_json=record.sampling_params_json,
            layers=record.layers,
            num_positions=record.num_positions,
            hidden_size=record.hidden_size,
            dtype=record.dtype,
            num_layers=record.num_layers,
            finish_reason=record.finish_reason,
            created_at_ms=record.created_at_ms,
            choice_index=record.choice_index,
            request_id=record.request_id,
        )
    )
    digest = hashlib.sha256()
    sequence = 0
    for layer in record.layers:
        data = memoryview(record.activations[layer])
        row_bytes = len(data) // max(record.num_positions, 1)
        rows_per_chunk = max(1, CHUNK_BYTES // max(row_bytes, 1))
        for row in range(0, record.num_positions, rows_per_chunk):
            n_rows = min(rows_per_chunk, record.num_positions - row)
            piece = bytes(data[row * row_bytes : (row + n_rows) * row_bytes])
            digest.update(piece)
            yield storage_pb2.IngestRequest(
                chunk=storage_pb2.ActivationChunk(
                    record_id=record.record_id,
                    sequence=sequence,
                    layer=layer,
                    row_start=row,
                    row_count=n_rows,
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
    """Queue + sender task; `submit` never blocks the caller."""

    def __init__(self, storage_addr: str, max_message_bytes: int = 64 << 20) -> None:
        self._addr = storage_addr
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._queue: asyncio.Queue[CapturedRecord] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self.stored = 0
        self.failures = 0

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._addr, options=self._options)
        self._task = asyncio.create_task(self._run())

    def submit(self, record: CapturedRecord) -> None:
        self._queue.put_nowait(record)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def drain(self, timeout: float) -> bool:
        """Wait until every submitted record is stored (or the timeout passes)."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()

    async def _run(self) -> None:
        assert self._channel is not None
        stub = storage_pb2_grpc.StorageStub(self._channel)
        while True:
            record = await self._queue.get()
            delay = 0.2
            while True:
                try:
                    await stub.Ingest(ingest_messages(record), timeout=60)
                    self.stored += 1
                    logger.debug("stored record %s", record.record_id)
                    break
                except grpc.aio.AioRpcError as exc:
                    self.failures += 1
                    if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT,):
                        logger.error(
                            "storage rejected record %s: %s", record.record_id, exc.details()
                        )
                        break
                    logger.warning(
                        "storage unavailable for record %s (%s); retrying in %.1fs",
                        record.record_id,
                        exc.code().name,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self._queue.task_done()
