"""LMDB persistence of activation records (no gRPC here).

One `lmdb.Environment` per process with named sub-databases:

- ``records``: record id (16 bytes) -> serialized `RecordHeader` without its labels
  (status, activation_bytes, compression and stored_bytes filled in by storage).
- ``chunks``: record id (16 bytes) + layer (u16 BE) + row_start (u32 BE) -> rows,
  row-major, little-endian values of the record's dtype, compressed with the record's
  codec. Keyed by position, so a re-sent chunk overwrites and never duplicates.
- ``by_hash``: prompt hash (32 bytes) + record id (16 bytes) -> empty. Several records
  share a prompt hash; record ids sort by time, so reverse key order is newest first.
- ``labels``: record id (16 bytes) + label key (UTF-8) -> label value (UTF-8). Changing a
  label never rewrites the header or the activations.
- ``ingesting``: record id -> token (8 bytes) + stored bytes so far (u64 BE): the Ingest
  stream that owns a PARTIAL record. A replay or delete replaces or removes the token, so
  a stale stream's later chunks are refused instead of mixed in.
- ``meta``: the layout version and the Stats counters (see counters.py).

Every write goes through the writer thread (writer.py: group commit, map growth);
reads run in parallel in read transactions with zero-copy buffers (queries.py).
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from actlog_common.v1 import storage_pb2
from storage_service import compression as codecs
from storage_service import counters
from storage_service import records as rec
from storage_service.errors import ConflictingState, InvalidRequest, RecordNotFound
from storage_service.queries import Queries
from storage_service.writer import TxnGuard, Writer

logger = logging.getLogger(__name__)

COMPLETE = storage_pb2.RECORD_STATUS_COMPLETE
PARTIAL = storage_pb2.RECORD_STATUS_PARTIAL
LAYOUT_KEY = b"layout"
# 1: labels inside headers, Stats by scanning; 2: counters; 3: activation bytes of complete
# records only (a PARTIAL header claims bytes it may never hold)
LAYOUT = b"3"
# token, stored bytes so far, time of the stream's last write (Unix ms; entries written
# before it was kept are 16 bytes long and count from the first sweep that sees them)
_INGESTING = struct.Struct(">8sQQ")
_INGESTING_V1 = struct.Struct(">8sQ")


def _ingesting(entry: bytes) -> tuple[bytes, int, int | None]:
    if len(entry) == _INGESTING_V1.size:
        return (*_INGESTING_V1.unpack(entry), None)
    return _INGESTING.unpack(entry)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class IngestTicket:
    """What one Ingest stream needs to add chunks to the record it started."""

    header: storage_pb2.RecordHeader  # as sent (labels included), status PARTIAL
    rid: bytes
    token: bytes
    compress: codecs.Codec | None = field(repr=False, default=None)


class ActivationStore(Queries):
    """Records and their activation chunks in one LMDB environment directory."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        map_size: int,
        compression: codecs.Compression = codecs.Compression.NONE,
        max_record_bytes: int = 0,
        max_label_bytes: int = rec.DEFAULT_MAX_LABEL_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_record_bytes = max_record_bytes
        self.max_label_bytes = max_label_bytes
        self.path.mkdir(parents=True, exist_ok=True)
        codecs.check_available(compression)
        self.compression = compression
        env = lmdb.open(str(self.path), map_size=map_size, max_dbs=16, subdir=True)
        guard = TxnGuard()
        super().__init__(env, guard)
        self._ingesting = env.open_db(b"ingesting")
        self._writer = Writer(env, guard)
        self._writer.run(self._upgrade)

    def close(self) -> None:
        """Commit the writes already queued, then close LMDB."""
        self._writer.close()
        self._env.close()

    # -- ingest ---------------------------------------------------------------------

    def begin_ingest(self, header: storage_pb2.RecordHeader) -> tuple[IngestTicket, Future[None]]:
        """Queue `header` as a PARTIAL record; the ticket for its chunks, and the write.

        Writing the header of a PARTIAL record replaces it: its old chunks are dropped,
        so re-ingesting a record (e.g. replaying a spooled capture) never mixes old rows
        with new ones, and the record is PARTIAL until the new commit. Labels already
        attached to the record are kept (those in `header` are set on top). A COMPLETE
        record is never rewritten (`replaying_complete` says when to acknowledge instead);
        if one completes meanwhile, the write fails with ConflictingState.
        """
        rec.validate_header(header, self.max_record_bytes)
        sent = storage_pb2.RecordHeader()
        sent.CopyFrom(header)
        sent.status = PARTIAL
        sent.activation_bytes = rec.activation_bytes(sent)
        sent.compression = self.compression.value
        sent.stored_bytes = 0
        stored = storage_pb2.RecordHeader()
        stored.CopyFrom(sent)
        stored.ClearField("labels")
        rid = rec.record_key(sent.record_id)
        hash_key = rec.hash_key(sent.prompt_hash)
        token = os.urandom(8)
        value = stored.SerializeToString()
        labels = [(rec.label_key(rid, k), v.encode()) for k, v in sent.labels.items()]

        def write(txn: lmdb.Transaction) -> None:
            old = self._load(txn, rid, labels=False)
            if old is not None and old.status == COMPLETE:
                raise ConflictingState(
                    f"record {sent.record_id} was completed by another call meanwhile"
                )
            if old is not None:
                self._counters.add_record(txn, old, -1)
                self._counters.add(txn, counters.STORED_BYTES, -self._delete_chunks(txn, rid))
                if old.prompt_hash != sent.prompt_hash:
                    self._unindex_hash(txn, rec.hash_key(old.prompt_hash), rid)
            if old is None or old.prompt_hash != sent.prompt_hash:
                self._index_hash(txn, hash_key, rid)
            for key, label in labels:
                txn.put(key, label, db=self._labels)
            txn.put(rid, value, db=self._records)
            txn.put(rid, _INGESTING.pack(token, 0, _now_ms()), db=self._ingesting)
            self._counters.add_record(txn, stored, 1)

        future = self._writer.submit(write, len(value))
        ticket = IngestTicket(sent, rid, token, codecs.compressor(self.compression))
        return ticket, future

    def write_chunks(
        self,
        ticket: IngestTicket,
        chunks: Sequence[tuple[int, int, bytes | memoryview]],
        *,
        complete: bool = False,
    ) -> Future[int]:
        """Queue already-validated (layer, row_start, data) chunks of `ticket`'s record.

        The data is compressed here, in the caller's thread. With `complete`, the same
        transaction flips the record to COMPLETE, so it becomes visible as complete
        exactly when its last rows are durable. If the record was re-ingested or deleted
        meanwhile, nothing is written and the future raises ConflictingState. The
        future's result is the number of bytes stored.
        """
        rid, token, compress = ticket.rid, ticket.token, ticket.compress
        items = [
            (rec.chunk_key(rid, layer, row_start), compress(data) if compress else data)
            for layer, row_start, data in chunks
        ]
        size = sum(len(value) for _, value in items)

        def write(txn: lmdb.Transaction) -> int:
            entry = txn.get(rid, db=self._ingesting)
            if entry is None or _ingesting(entry)[0] != token:
                raise ConflictingState(
                    f"record {ticket.header.record_id} was re-ingested or deleted by another "
                    "call meanwhile"
                )
            stored = _ingesting(entry)[1]
            delta = 0
            for key, value in items:
                old = txn.replace(key, value, db=self._chunks)
                delta += len(value) - (len(old) if old is not None else 0)
            self._counters.add(txn, counters.STORED_BYTES, delta)
            if complete:
                header = self._load(txn, rid, labels=False)
                assert header is not None  # the ingesting token is removed with it
                self._counters.add_record(txn, header, -1)
                header.status = COMPLETE
                header.stored_bytes = stored + delta
                txn.put(rid, header.SerializeToString(), db=self._records)
                txn.delete(rid, db=self._ingesting)
                self._counters.add_record(txn, header, 1)
            else:
                txn.put(rid, _INGESTING.pack(token, stored + delta, _now_ms()), db=self._ingesting)
            return size

        return self._writer.submit(write, size)

    def replaying_complete(self, record_id: str) -> bool:
        """Whether `record_id` is already stored COMPLETE: an Ingest of it is a replay
        (e.g. a spool resent after a lost acknowledgement) to acknowledge, not to apply."""
        rid = rec.record_key(record_id)
        with self._read() as txn:
            header = self._load(txn, rid, labels=False)
        return header is not None and header.status == COMPLETE

    # -- labels and deletion --------------------------------------------------------

    def set_labels(
        self, record_id: str, labels: Mapping[str, str], remove: Sequence[str] = ()
    ) -> storage_pb2.RecordHeader:
        """Set `labels` and remove the keys in `remove`; the header with its new labels."""
        rid = rec.record_key(record_id)
        rec.validate_labels(record_id, labels, remove)
        puts = [(rec.label_key(rid, k), v.encode()) for k, v in labels.items()]
        deletes = [rec.label_key(rid, k) for k in remove]

        def write(txn: lmdb.Transaction) -> storage_pb2.RecordHeader:
            if txn.get(rid, db=self._records) is None:
                raise RecordNotFound(f"no record with id {record_id}")
            for key in deletes:
                txn.delete(key, db=self._labels)
            for key, value in puts:
                txn.put(key, value, db=self._labels)
            header = self._load(txn, rid)
            assert header is not None
            # Checked on the result, inside the transaction: a refusal rolls all of it back.
            total = rec.label_bytes(header.labels)
            if total > self.max_label_bytes:
                raise InvalidRequest(
                    f"record {record_id}: its labels would take {total} bytes (keys and "
                    f"values), above the limit of {self.max_label_bytes} per record "
                    "(STORAGE_MAX_LABEL_BYTES); nothing was changed"
                )
            return header

        return self._writer.run(write)

    def delete(self, record_id: str) -> storage_pb2.RecordHeader:
        """Remove a record entirely; its header as it was (stored_bytes = bytes freed)."""
        rid = rec.record_key(record_id)

        def write(txn: lmdb.Transaction) -> storage_pb2.RecordHeader:
            header = self._delete_record(txn, rid)
            if header is None:
                raise RecordNotFound(f"no record with id {record_id}")
            return header

        return self._writer.run(write)

    def expire_partial(self, ttl_s: float) -> list[str]:
        """Delete PARTIAL records whose Ingest stream last wrote more than `ttl_s` ago (a
        stream that died and was never replayed); the ids deleted."""
        cutoff = _now_ms() - int(ttl_s * 1000)

        def write(txn: lmdb.Transaction) -> list[str]:
            expired, restamp = [], []
            for key, entry in txn.cursor(db=self._ingesting):
                token, stored, updated = _ingesting(bytes(entry))
                if updated is None:
                    restamp.append((bytes(key), _INGESTING.pack(token, stored, _now_ms())))
                elif updated < cutoff:
                    expired.append(bytes(key))
            for key, value in restamp:
                txn.put(key, value, db=self._ingesting)
            for rid in expired:
                self._delete_record(txn, rid)
            return [rid.hex() for rid in expired]

        return self._writer.run(write)

    # -- helpers (inside a write transaction) ---------------------------------------

    def _delete_record(self, txn: lmdb.Transaction, rid: bytes) -> storage_pb2.RecordHeader | None:
        header = self._load(txn, rid)
        if header is None:
            txn.delete(rid, db=self._ingesting)
            return None
        self._counters.add_record(txn, header, -1)
        freed = self._delete_chunks(txn, rid)
        self._counters.add(txn, counters.STORED_BYTES, -freed)
        header.stored_bytes = freed
        self._unindex_hash(txn, rec.hash_key(header.prompt_hash), rid)
        self._delete_prefix(txn, self._labels, rid)
        txn.delete(rid, db=self._ingesting)
        txn.delete(rid, db=self._records)
        return header

    def _delete_prefix(self, txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes) -> int:
        """Delete every key of `db` starting with `prefix`; the value bytes removed."""
        removed = 0
        cursor = txn.cursor(db=db)
        found = cursor.set_range(prefix)
        while found and cursor.key()[: len(prefix)] == prefix:
            removed += len(cursor.value())
            found = cursor.delete()
        return removed

    def _delete_chunks(self, txn: lmdb.Transaction, rid: bytes) -> int:
        return self._delete_prefix(txn, self._chunks, rid)

    def _has_prefix(self, txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes) -> bool:
        cursor = txn.cursor(db=db)
        return cursor.set_range(prefix) and cursor.key()[: len(prefix)] == prefix

    def _index_hash(self, txn: lmdb.Transaction, hash_key: bytes, rid: bytes) -> None:
        if not self._has_prefix(txn, self._by_hash, hash_key):
            self._counters.add(txn, counters.PROMPT_HASHES, 1)
        txn.put(hash_key + rid, b"", db=self._by_hash)

    def _unindex_hash(self, txn: lmdb.Transaction, hash_key: bytes, rid: bytes) -> None:
        txn.delete(hash_key + rid, db=self._by_hash)
        if not self._has_prefix(txn, self._by_hash, hash_key):
            self._counters.add(txn, counters.PROMPT_HASHES, -1)

    def _upgrade(self, txn: lmdb.Transaction) -> None:
        """Bring an older or new environment to this layout: labels apart, counters."""
        if txn.get(LAYOUT_KEY, db=self._meta) == LAYOUT:
            return
        self._counters.clear(txn)
        rewrites: list[tuple[bytes, storage_pb2.RecordHeader]] = []
        for key, value in txn.cursor(db=self._records):
            rid, header = bytes(key), storage_pb2.RecordHeader.FromString(value)
            if header.labels:
                for name, label in header.labels.items():
                    txn.put(rec.label_key(rid, name), label.encode(), db=self._labels)
                header.ClearField("labels")
                rewrites.append((rid, header))
            self._counters.add_record(txn, header, 1)
        for rid, header in rewrites:
            txn.put(rid, header.SerializeToString(), db=self._records)
        stored = sum(len(v) for v in txn.cursor(db=self._chunks).iternext(keys=False))
        self._counters.add(txn, counters.STORED_BYTES, stored)
        previous, hashes = b"", 0
        for key in txn.cursor(db=self._by_hash).iternext(values=False):
            prefix = bytes(key[:32])
            hashes += prefix != previous
            previous = prefix
        self._counters.add(txn, counters.PROMPT_HASHES, hashes)
        txn.put(LAYOUT_KEY, LAYOUT, db=self._meta)
        if rewrites or stored:
            logger.info("LMDB at %s upgraded to layout %s", self.path, LAYOUT.decode())
