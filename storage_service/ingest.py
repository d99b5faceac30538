"""One Ingest stream: a header, its chunks in sequence order, then a commit (no gRPC)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from actlog.v1 import storage_pb2
from storage_service import records as rec
from storage_service.errors import InvalidArgument
from storage_service.store import ActivationStore

# Chunks are buffered and written this many bytes per write transaction (group commit).
WRITE_BATCH_BYTES = 16 << 20


@dataclass(frozen=True)
class IngestResult:
    record_id: str
    status: int  # storage_pb2.RecordStatus
    bytes_written: int


class IngestSession:
    """Checks one record's stream as it arrives and writes it to the store.

    The record is written PARTIAL when its header arrives; chunks must follow with
    sequence 0, 1, 2... and are written in batches; the commit checks the chunk count,
    the SHA-256 over the chunks' data in sequence order and that every stored layer's
    rows are covered exactly once, then flips the record to COMPLETE in the same
    transaction as its last chunks. Any error leaves the record PARTIAL.
    """

    def __init__(self, store: ActivationStore) -> None:
        self._store = store
        self._header: storage_pb2.RecordHeader | None = None
        self._sha = hashlib.sha256()
        self._next_sequence = 0
        self._pending: list[storage_pb2.ActivationChunk] = []
        self._pending_bytes = 0
        self._bytes = 0
        self._rows: dict[int, dict[int, int]] = {}  # layer -> row_start -> row_count
        self._result: IngestResult | None = None

    def add(self, request: storage_pb2.IngestRequest) -> None:
        """Handle one message of the stream."""
        if self._result is not None:
            raise InvalidArgument(
                f"message after the commit of record {self._result.record_id}: "
                "one Ingest stream carries one record"
            )
        kind = request.WhichOneof("item")
        if kind == "header":
            self._on_header(request.header)
        elif kind == "chunk":
            self._on_chunk(request.chunk)
        elif kind == "commit":
            self._on_commit(request.commit)
        else:
            raise InvalidArgument("empty IngestRequest: set header, chunk or commit")

    def finish(self) -> IngestResult:
        """The outcome once the stream has ended; InvalidArgument without a commit."""
        if self._result is not None:
            return self._result
        if self._header is None:
            raise InvalidArgument("empty Ingest stream: expected a header, chunks, a commit")
        raise InvalidArgument(
            f"Ingest stream of record {self._header.record_id} ended without a commit "
            f"after {self._next_sequence} chunks; the record stays partial"
        )

    def _on_header(self, header: storage_pb2.RecordHeader) -> None:
        if self._header is not None:
            raise InvalidArgument(
                f"second header in the Ingest stream of record {self._header.record_id}: "
                "one Ingest stream carries one record"
            )
        self._header = self._store.put_header(header)

    def _on_chunk(self, chunk: storage_pb2.ActivationChunk) -> None:
        header = self._header
        if header is None:
            raise InvalidArgument(
                f"chunk {chunk.sequence} of record {chunk.record_id!r} arrived before the "
                "record's header: send the header first"
            )
        if chunk.sequence != self._next_sequence:
            raise InvalidArgument(
                f"record {header.record_id}: chunk sequence {chunk.sequence} out of order, "
                f"expected {self._next_sequence}"
            )
        rec.validate_chunk(header, chunk)
        self._next_sequence += 1
        self._sha.update(chunk.data)
        self._rows.setdefault(chunk.layer, {})[chunk.row_start] = chunk.row_count
        self._pending.append(chunk)
        self._pending_bytes += len(chunk.data)
        if self._pending_bytes >= WRITE_BATCH_BYTES:
            self._flush(complete=False)

    def _on_commit(self, commit: storage_pb2.IngestCommit) -> None:
        header = self._header
        if header is None:
            raise InvalidArgument(f"commit of record {commit.record_id!r} before its header")
        rid = header.record_id
        if commit.record_id != rid:
            raise InvalidArgument(
                f"commit is for record {commit.record_id!r}, but this stream ingests {rid}"
            )
        if commit.num_chunks != self._next_sequence:
            raise InvalidArgument(
                f"record {rid}: commit announces {commit.num_chunks} chunks, "
                f"{self._next_sequence} arrived; the record stays partial"
            )
        digest = self._sha.hexdigest()
        if commit.sha256 != digest:
            raise InvalidArgument(
                f"record {rid}: checksum mismatch (commit says {commit.sha256!r}, the chunks "
                f"hash to {digest}); the record stays partial"
            )
        self._check_coverage(header)
        self._flush(complete=True)
        self._result = IngestResult(rid, storage_pb2.RECORD_STATUS_COMPLETE, self._bytes)

    def _check_coverage(self, header: storage_pb2.RecordHeader) -> None:
        for layer in header.layers:
            covered = 0
            for row_start, row_count in sorted(self._rows.get(layer, {}).items()):
                if row_start != covered:
                    break
                covered += row_count
            if covered != header.num_positions:
                raise InvalidArgument(
                    f"record {header.record_id}: layer {layer} rows are not covered exactly "
                    f"once from 0 to {header.num_positions} (contiguous up to row {covered}); "
                    "the record stays partial"
                )

    def _flush(self, *, complete: bool) -> None:
        assert self._header is not None
        self._store.put_chunks(self._header, self._pending, complete=complete)
        self._bytes += self._pending_bytes
        self._pending, self._pending_bytes = [], 0
