"""Stats counters kept in the ``meta`` sub-database, changed in the writes' own transactions.

Every write that adds, replaces, completes or deletes a record adjusts these counters in
the same LMDB transaction, so they are exact after any crash and `Stats` reads a few keys
instead of scanning every record. Values are signed 64-bit big-endian integers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import lmdb

from actlog_common.v1 import storage_pb2

_I64 = struct.Struct(">q")
_MODEL = struct.Struct(">qq")  # records, activation_bytes

RECORDS = b"count/records"
COMPLETE = b"count/complete_records"
ACTIVATION_BYTES = b"count/activation_bytes"
STORED_BYTES = b"count/stored_bytes"
PROMPT_HASHES = b"count/prompt_hashes"
MODEL_PREFIX = b"model/"
SCALARS = (RECORDS, COMPLETE, ACTIVATION_BYTES, STORED_BYTES, PROMPT_HASHES)


@dataclass(frozen=True)
class ModelCounts:
    records: int = 0
    activation_bytes: int = 0


@dataclass(frozen=True)
class Counts:
    records: int = 0
    complete_records: int = 0
    activation_bytes: int = 0
    stored_bytes: int = 0
    prompt_hashes: int = 0
    models: dict[str, ModelCounts] = field(default_factory=dict)


class Counters:
    """Reads and adjusts the counters of one ``meta`` sub-database."""

    def __init__(self, db: lmdb._Database) -> None:
        self._db = db

    def add(self, txn: lmdb.Transaction, key: bytes, delta: int) -> None:
        if delta:
            value = txn.get(key, db=self._db)
            current = _I64.unpack(value)[0] if value is not None else 0
            txn.put(key, _I64.pack(current + delta), db=self._db)

    def add_record(
        self, txn: lmdb.Transaction, header: storage_pb2.RecordHeader, sign: int
    ) -> None:
        """Count (`sign` 1) or uncount (-1) a record as its header describes it. Every
        record counts in `records`; only COMPLETE ones in the bytes and per-model counts,
        since a PARTIAL header claims bytes it may never hold."""
        self.add(txn, RECORDS, sign)
        if header.status != storage_pb2.RECORD_STATUS_COMPLETE:
            return
        self.add(txn, COMPLETE, sign)
        self.add(txn, ACTIVATION_BYTES, sign * header.activation_bytes)
        key = MODEL_PREFIX + header.model.encode()
        value = txn.get(key, db=self._db)
        records, nbytes = _MODEL.unpack(value) if value is not None else (0, 0)
        records += sign
        nbytes += sign * header.activation_bytes
        if records > 0:
            txn.put(key, _MODEL.pack(records, nbytes), db=self._db)
        elif value is not None:
            txn.delete(key, db=self._db)

    def clear(self, txn: lmdb.Transaction) -> None:
        for key in SCALARS:
            txn.delete(key, db=self._db)
        cursor = txn.cursor(db=self._db)
        found = cursor.set_range(MODEL_PREFIX)
        # Keys are memoryviews in the writer's buffers=True transactions.
        while found and bytes(cursor.key()).startswith(MODEL_PREFIX):
            found = cursor.delete()

    def read(self, txn: lmdb.Transaction) -> Counts:
        scalars = []
        for key in SCALARS:
            value = txn.get(key, db=self._db)
            scalars.append(_I64.unpack(value)[0] if value is not None else 0)
        models: dict[str, ModelCounts] = {}
        cursor = txn.cursor(db=self._db)
        found = cursor.set_range(MODEL_PREFIX)
        while found:
            key = bytes(cursor.key())
            if not key.startswith(MODEL_PREFIX):
                break
            records, nbytes = _MODEL.unpack(cursor.value())
            models[key[len(MODEL_PREFIX) :].decode()] = ModelCounts(records, nbytes)
            found = cursor.next()
        records, complete, activation_bytes, stored_bytes, hashes = scalars
        return Counts(records, complete, activation_bytes, stored_bytes, hashes, models)
