"""One Ingest stream: a header, its chunks in sequence order, then a commit (no gRPC)."""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from actlog_common.v1 import storage_pb2
from storage_service import records as rec
from storage_service.errors import InvalidRequest
from storage_service.store import ActivationStore, IngestTicket
from storage_service.wire import ChunkView

# Chunks are buffered and handed to the writer thread this many bytes at a time; the
# writer commits the writes of all streams together (group commit).
WRITE_BATCH_BYTES = 4 << 20
# Writes one stream may have queued before it waits for the oldest: the stream keeps
# receiving while its previous rows are written (2 measured about a third slower than 4
# on 2 cores), and holds at most (4 + 1) x 4 MiB.
MAX_WRITES_IN_FLIGHT = 4


@dataclass(frozen=True)
class IngestResult:
    record_id: str
    status: int  # storage_pb2.RecordStatus
    bytes_written: int


class IngestSession:
    """Checks one record's stream as it arrives and writes it to the store.

    The record is written PARTIAL when its header arrives; chunks must follow with
    sequence 0, 1, 2... and are written in batches; the commit checks the chunk count,
    the SHA-256 over the chunks' data (uncompressed) in sequence order and that every
    stored layer's rows are covered exactly once, then flips the record to COMPLETE in
    the same transaction as its last chunks, and waits for that to be durable. Any
    error leaves the record PARTIAL.
    """

    def __init__(self, store: ActivationStore) -> None:
        self._store = store
        self._ticket: IngestTicket | None = None
        self._header: storage_pb2.RecordHeader | None = None
        self._sha = hashlib.sha256()
        self._next_sequence = 0
        self._in_flight: deque[Future[object]] = deque()
        self._pending: list[tuple[int, int, bytes | memoryview]] = []
        self._pending_bytes = 0
        self._bytes = 0
        self._rows: dict[int, dict[int, int]] = {}  # layer -> row_start -> row_count
        self._result: IngestResult | None = None
        self._replay = False  # the record is COMPLETE in storage: acknowledge, change nothing

    def add(self, request: storage_pb2.IngestRequest | ChunkView) -> None:
        """Handle one message of the stream (a chunk may come as a zero-copy view)."""
        if self._result is not None:
            raise InvalidRequest(
                f"message after the commit of record {self._result.record_id}: "
                "one Ingest stream carries one record"
            )
        if isinstance(request, ChunkView):
            self._on_chunk(request)
            return
        kind = request.WhichOneof("item")
        if kind == "header":
            self._on_header(request.header)
        elif kind == "chunk":
            self._on_chunk(request.chunk)
        elif kind == "commit":
            self._on_commit(request.commit)
        else:
            raise InvalidRequest("empty IngestRequest: set header, chunk or commit")

    def finish(self) -> IngestResult:
        """The outcome once the stream has ended; InvalidRequest without a commit."""
        if self._result is not None:
            return self._result
        if self._replay and self._header is not None:
            return IngestResult(self._header.record_id, storage_pb2.RECORD_STATUS_COMPLETE, 0)
        if self._header is None:
            raise InvalidRequest("empty Ingest stream: expected a header, chunks, a commit")
        raise InvalidRequest(
            f"Ingest stream of record {self._header.record_id} ended without a commit "
            f"after {self._next_sequence} chunks; the record stays partial"
        )

    def settle(self) -> None:
        """Wait for this stream's queued writes (after an error: their errors are moot)."""
        while self._in_flight:
            self._in_flight.popleft().exception()

    def _on_header(self, header: storage_pb2.RecordHeader) -> None:
        if self._header is not None:
            raise InvalidRequest(
                f"second header in the Ingest stream of record {self._header.record_id}: "
                "one Ingest stream carries one record"
            )
        if self._store.replaying_complete(header.record_id):
            # Stored whole already: check the replay's stream as usual, write nothing.
            rec.validate_header(header, self._store.max_record_bytes)
            self._header = header
            self._replay = True
            return
        self._ticket, written = self._store.begin_ingest(header)
        self._header = self._ticket.header
        self._track(written)

    def _on_chunk(self, chunk: storage_pb2.ActivationChunk | ChunkView) -> None:
        header = self._header
        if header is None:
            raise InvalidRequest(
                f"chunk {chunk.sequence} of record {chunk.record_id!r} arrived before the "
                "record's header: send the header first"
            )
        if chunk.sequence != self._next_sequence:
            raise InvalidRequest(
                f"record {header.record_id}: chunk sequence {chunk.sequence} out of order, "
                f"expected {self._next_sequence}"
            )
        data = chunk.data  # (a protobuf bytes field copies on each read: read it once)
        rec.validate_chunk(header, chunk, len(data))
        self._next_sequence += 1
        self._sha.update(data)
        self._rows.setdefault(chunk.layer, {})[chunk.row_start] = chunk.row_count
        if self._replay:
            return
        self._pending.append((chunk.layer, chunk.row_start, data))
        self._pending_bytes += len(data)
        if self._pending_bytes >= WRITE_BATCH_BYTES:
            self._flush(complete=False)

    def _on_commit(self, commit: storage_pb2.IngestCommit) -> None:
        header = self._header
        if header is None:
            raise InvalidRequest(f"commit of record {commit.record_id!r} before its header")
        rid = header.record_id
        if commit.record_id != rid:
            raise InvalidRequest(
                f"commit is for record {commit.record_id!r}, but this stream ingests {rid}"
            )
        if commit.num_chunks != self._next_sequence:
            raise InvalidRequest(
                f"record {rid}: commit announces {commit.num_chunks} chunks, "
                f"{self._next_sequence} arrived; the record stays partial"
            )
        digest = self._sha.hexdigest()
        if commit.sha256 != digest:
            raise InvalidRequest(
                f"record {rid}: checksum mismatch (commit says {commit.sha256!r}, the chunks "
                f"hash to {digest}); the record stays partial"
            )
        self._check_coverage(header)
        if self._replay:
            self._result = IngestResult(rid, storage_pb2.RECORD_STATUS_COMPLETE, 0)
            return
        self._flush(complete=True)
        while self._in_flight:
            self._in_flight.popleft().result()
        self._result = IngestResult(rid, storage_pb2.RECORD_STATUS_COMPLETE, self._bytes)

    def _check_coverage(self, header: storage_pb2.RecordHeader) -> None:
        for layer in header.layers:
            covered = 0
            for row_start, row_count in sorted(self._rows.get(layer, {}).items()):
                if row_start != covered:
                    break
                covered += row_count
            if covered != header.num_positions:
                raise InvalidRequest(
                    f"record {header.record_id}: layer {layer} rows are not covered exactly "
                    f"once from 0 to {header.num_positions} (contiguous up to row {covered}); "
                    "the record stays partial"
                )

    def _flush(self, *, complete: bool) -> None:
        assert self._ticket is not None
        self._track(self._store.write_chunks(self._ticket, self._pending, complete=complete))
        self._bytes += self._pending_bytes
        self._pending, self._pending_bytes = [], 0

    def _track(self, write: Future[object]) -> None:
        """Remember a queued write; raise what the oldest raised once too many are queued."""
        self._in_flight.append(write)
        while self._in_flight and (
            len(self._in_flight) > MAX_WRITES_IN_FLIGHT or self._in_flight[0].done()
        ):
            self._in_flight.popleft().result()
