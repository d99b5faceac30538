"""LMDB persistence of activation records (no gRPC here).

One `lmdb.Environment` per process with named sub-databases:

- ``records``: record id (16 bytes) -> serialized `RecordHeader` (status and
  activation_bytes filled in by storage).
- ``chunks``: record id (16 bytes) + layer (u16 BE) + row_start (u32 BE) -> raw rows,
  row-major, little-endian values of the record's dtype. Keyed by position, so a
  re-sent chunk overwrites and never duplicates.
- ``by_hash``: prompt hash (32 bytes) + record id (16 bytes) -> empty. Several records
  share a prompt hash; record ids sort by time, so reverse key order is newest first.

Writes are serialised by one lock; readers run in parallel. A full map is doubled and the
write transaction retried, so callers never see `lmdb.MapFullError`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import lmdb

from actlog.v1 import storage_pb2
from storage_service import records as rec
from storage_service.errors import FailedPrecondition, InvalidArgument, NotFound, PartialRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")
COMPLETE = storage_pb2.RECORD_STATUS_COMPLETE
PARTIAL = storage_pb2.RECORD_STATUS_PARTIAL
# Bytes copied out of one read transaction before it is closed and the batch yielded,
# so a slow reader never holds a transaction (and so never blocks a map resize) for long.
READ_BATCH_BYTES = 8 << 20


@dataclass(frozen=True)
class ModelStats:
    records: int = 0
    activation_bytes: int = 0


@dataclass(frozen=True)
class StoreStats:
    records: int
    complete_records: int
    activation_bytes: int
    prompt_hashes: int
    models: dict[str, ModelStats] = field(default_factory=dict)
    lmdb_used_bytes: int = 0
    lmdb_map_size: int = 0


class _TxnGuard:
    """Lets transactions run in parallel, but a map resize only when none is open.

    LMDB requires that no transaction of this process is active during `set_mapsize`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False

    @contextmanager
    def txn(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class ActivationStore:
    """Records and their activation chunks in one LMDB environment directory."""

    def __init__(self, path: str | os.PathLike[str], map_size: int) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(self.path), map_size=map_size, max_dbs=8, subdir=True)
        self._records = self._env.open_db(b"records")
        self._chunks = self._env.open_db(b"chunks")
        self._by_hash = self._env.open_db(b"by_hash")
        self._write_lock = threading.Lock()
        self._guard = _TxnGuard()

    @property
    def map_size(self) -> int:
        """The current LMDB map size in bytes (it doubles whenever it fills up)."""
        return self._env.info()["map_size"]

    def close(self) -> None:
        self._env.close()

    # -- writes ---------------------------------------------------------------------

    def put_header(self, header: storage_pb2.RecordHeader) -> storage_pb2.RecordHeader:
        """Store `header` as a PARTIAL record; returns the stored header.

        Writing the header of an existing record replaces it: its old chunks are dropped,
        so re-ingesting a record (e.g. replaying a spooled capture) never mixes old rows
        with new ones, and the record is PARTIAL until the new commit.
        """
        rec.validate_header(header)
        stored = storage_pb2.RecordHeader()
        stored.CopyFrom(header)
        stored.status = PARTIAL
        stored.activation_bytes = rec.activation_bytes(stored)
        rid = rec.record_key(stored.record_id)
        new_hash_key = rec.hash_key(stored.prompt_hash) + rid

        def write(txn: lmdb.Transaction) -> None:
            old = txn.get(rid, db=self._records)
            if old is not None:
                old_header = storage_pb2.RecordHeader.FromString(old)
                old_hash_key = rec.hash_key(old_header.prompt_hash) + rid
                if old_hash_key != new_hash_key:
                    txn.delete(old_hash_key, db=self._by_hash)
                self._delete_chunks(txn, rid)
            txn.put(rid, stored.SerializeToString(), db=self._records)
            txn.put(new_hash_key, b"", db=self._by_hash)

        self._write(write)
        return stored

    def put_chunks(
        self,
        header: storage_pb2.RecordHeader,
        chunks: Sequence[storage_pb2.ActivationChunk],
        *,
        complete: bool = False,
    ) -> None:
        """Write already-validated `chunks` of the record `header` in one transaction.

        With `complete`, the same transaction flips the record to COMPLETE, so it becomes
        visible as complete exactly when its last rows are durable. `header` must be what
        `put_header` returned; if the record was replaced meanwhile, nothing is written.
        """
        rid = rec.record_key(header.record_id)
        expected = header.SerializeToString(deterministic=True)

        def write(txn: lmdb.Transaction) -> None:
            current = txn.get(rid, db=self._records)
            if current is None:
                raise NotFound(f"record {header.record_id} has no header")
            current_header = storage_pb2.RecordHeader.FromString(current)
            if current_header.SerializeToString(deterministic=True) != expected:
                raise FailedPrecondition(
                    f"record {header.record_id} was re-ingested by another stream meanwhile"
                )
            for chunk in chunks:
                txn.put(
                    rec.chunk_key(rid, chunk.layer, chunk.row_start), chunk.data, db=self._chunks
                )
            if complete:
                current_header.status = COMPLETE
                txn.put(rid, current_header.SerializeToString(), db=self._records)

        self._write(write)

    def _delete_chunks(self, txn: lmdb.Transaction, rid: bytes) -> None:
        cursor = txn.cursor(db=self._chunks)
        found = cursor.set_range(rid)
        while found and cursor.key()[:16] == rid:
            found = cursor.delete()

    def _write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        with self._write_lock:
            while True:
                try:
                    with self._guard.txn(), self._env.begin(write=True) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    self._grow()

    def _grow(self) -> None:
        with self._guard.exclusive():
            old = self._env.info()["map_size"]
            self._env.set_mapsize(old * 2)
            new = self._env.info()["map_size"]
        logger.info("LMDB map full: grew map from %d to %d bytes", old, new)

    # -- reads ----------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        with self._guard.txn(), self._env.begin(buffers=True) as txn:
            yield txn

    def get(self, record_id: str) -> storage_pb2.RecordHeader:
        """The header of one record (PARTIAL or COMPLETE); NotFound when unknown."""
        rid = rec.record_key(record_id)
        with self._read() as txn:
            value = txn.get(rid, db=self._records)
            if value is None:
                raise NotFound(f"no record with id {record_id}")
            return storage_pb2.RecordHeader.FromString(value)

    def find_by_prompt_hash(
        self, prompt_hash: str, model: str = ""
    ) -> list[storage_pb2.RecordHeader]:
        """Every record of this prompt hash (of `model` when set), newest first."""
        prefix = rec.hash_key(prompt_hash)
        headers: list[storage_pb2.RecordHeader] = []
        with self._read() as txn:
            cursor = txn.cursor(db=self._by_hash)
            found = cursor.set_range(prefix)
            rids: list[bytes] = []
            while found:
                key = bytes(cursor.key())
                if key[:32] != prefix:
                    break
                rids.append(key[32:])
                found = cursor.next()
            for rid in reversed(rids):
                value = txn.get(rid, db=self._records)
                if value is None:  # cannot happen: both are written in one transaction
                    continue
                header = storage_pb2.RecordHeader.FromString(value)
                if not model or header.model == model:
                    headers.append(header)
        return headers

    def stream_activations(
        self,
        record_id: str,
        layers: Sequence[int] = (),
        row_start: int = 0,
        row_end: int = 0,
    ) -> Iterator[storage_pb2.ActivationChunk]:
        """Chunks of the chosen layers clipped to rows [row_start, row_end).

        Layers come one after another (in request order, every stored layer when empty),
        each in ascending rows. `row_end` 0 means to the end. Arguments are checked
        before this returns; the chunks are read lazily, in batches.
        """
        header = self.get(record_id)
        if header.status != COMPLETE:
            raise PartialRecord(
                f"record {record_id} is partial: its activations have not all arrived"
            )
        chosen = rec.resolve_layers(header, list(layers))
        end = row_end or header.num_positions
        if not row_start <= end <= header.num_positions:
            raise InvalidArgument(
                f"rows [{row_start}, {row_end or 'end'}) outside record {record_id}, "
                f"which has {header.num_positions} positions"
            )
        return self._iter_chunks(header, chosen, row_start, end)

    def _iter_chunks(
        self, header: storage_pb2.RecordHeader, layers: list[int], start: int, end: int
    ) -> Iterator[storage_pb2.ActivationChunk]:
        rid = rec.record_key(header.record_id)
        width = rec.row_bytes(header)
        sequence = 0
        if start >= end or width == 0:
            return
        for layer in layers:
            prefix = rec.layer_prefix(rid, layer)
            resume: bytes | None = prefix
            while resume is not None:
                batch, resume = self._read_batch(header, rid, layer, resume, start, end, width)
                for chunk in batch:
                    chunk.sequence = sequence
                    sequence += 1
                    yield chunk

    def _read_batch(
        self,
        header: storage_pb2.RecordHeader,
        rid: bytes,
        layer: int,
        first_key: bytes,
        start: int,
        end: int,
        width: int,
    ) -> tuple[list[storage_pb2.ActivationChunk], bytes | None]:
        """Chunks of `layer` from `first_key` on, up to about READ_BATCH_BYTES.

        Returns the batch and the key to resume from (None when the layer is done).
        """
        prefix = rec.layer_prefix(rid, layer)
        batch: list[storage_pb2.ActivationChunk] = []
        size = 0
        with self._read() as txn:
            cursor = txn.cursor(db=self._chunks)
            found = cursor.set_range(first_key)
            while found:
                key = bytes(cursor.key())
                if key[: len(prefix)] != prefix:
                    break
                _, chunk_start = rec.split_chunk_key(key)
                if chunk_start >= end:
                    break
                value = cursor.value()
                lo, hi = max(start, chunk_start), min(end, chunk_start + len(value) // width)
                if lo < hi:
                    data = bytes(value[(lo - chunk_start) * width : (hi - chunk_start) * width])
                    batch.append(
                        storage_pb2.ActivationChunk(
                            record_id=header.record_id,
                            layer=layer,
                            row_start=lo,
                            row_count=hi - lo,
                            data=data,
                        )
                    )
                    size += len(data)
                    if size >= READ_BATCH_BYTES:
                        return batch, rec.chunk_key(rid, layer, chunk_start + 1)
                found = cursor.next()
        return batch, None

    def stats(self) -> StoreStats:
        """Counts over every record; scans the metadata (not the activations)."""
        records = complete = total_bytes = hashes = 0
        per_model: dict[str, ModelStats] = {}
        with self._read() as txn:
            for _, value in txn.cursor(db=self._records):
                header = storage_pb2.RecordHeader.FromString(value)
                records += 1
                complete += header.status == COMPLETE
                total_bytes += header.activation_bytes
                seen = per_model.get(header.model, ModelStats())
                per_model[header.model] = ModelStats(
                    seen.records + 1, seen.activation_bytes + header.activation_bytes
                )
            previous = b""
            for key in txn.cursor(db=self._by_hash).iternext(keys=True, values=False):
                prefix = bytes(key[:32])
                hashes += prefix != previous
                previous = prefix
            page_size = txn.stat(self._records)["psize"]
        info = self._env.info()
        return StoreStats(
            records=records,
            complete_records=complete,
            activation_bytes=total_bytes,
            prompt_hashes=hashes,
            models=dict(sorted(per_model.items())),
            lmdb_used_bytes=(info["last_pgno"] + 1) * page_size,
            lmdb_map_size=info["map_size"],
        )
