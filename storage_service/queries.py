"""Reads of the activation store: parallel read transactions on zero-copy buffers.

Values are read as buffers into LMDB's map and only what is returned is copied out.
Long reads (activation streams) are cut into batches, each in its own short
transaction, so a slow client never holds a transaction open (which would block a
map resize). See store.py for the sub-databases.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import lmdb
import numpy as np

from actlog_common.v1 import storage_pb2
from storage_service import compression as codecs
from storage_service import records as rec
from storage_service.counters import Counters, ModelCounts
from storage_service.errors import InvalidRequest, PartialRecord, RecordNotFound
from storage_service.wire import encode_chunk
from storage_service.writer import TxnGuard

COMPLETE = storage_pb2.RECORD_STATUS_COMPLETE
# Bytes copied out of one read transaction before it is closed and the batch yielded.
READ_BATCH_BYTES = 8 << 20
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Records ListRecords examines per call, and bytes of headers per page (well below the
# gRPC message limit, headers of long prompts included); past either it returns a
# short page and a token.
LIST_SCAN_LIMIT = 20_000
LIST_PAGE_BYTES = 16 << 20


@dataclass(frozen=True)
class Selection:
    """Layers and rows [row_start, row_end) of one complete record, checked."""

    header: storage_pb2.RecordHeader
    layers: list[int]
    row_start: int
    row_end: int

    @property
    def row_width(self) -> int:
        return rec.row_bytes(self.header)

    @property
    def layer_bytes(self) -> int:
        return (self.row_end - self.row_start) * self.row_width

    @property
    def nbytes(self) -> int:
        return len(self.layers) * self.layer_bytes


@dataclass(frozen=True)
class StoreStats:
    records: int
    complete_records: int
    activation_bytes: int
    prompt_hashes: int
    models: dict[str, ModelCounts] = field(default_factory=dict)
    lmdb_used_bytes: int = 0
    lmdb_map_size: int = 0
    stored_bytes: int = 0


class Queries:
    """The read side of `ActivationStore` (which adds the writes)."""

    def __init__(self, env: lmdb.Environment, guard: TxnGuard) -> None:
        self._env = env
        self._guard = guard
        self._records = env.open_db(b"records")
        self._chunks = env.open_db(b"chunks")
        self._by_hash = env.open_db(b"by_hash")
        self._labels = env.open_db(b"labels")
        self._meta = env.open_db(b"meta")
        self._counters = Counters(self._meta)

    @property
    def map_size(self) -> int:
        """The current LMDB map size in bytes (it doubles whenever it fills up)."""
        return self._env.info()["map_size"]

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        with self._guard.txn(), self._env.begin(buffers=True) as txn:
            yield txn

    def _load(
        self, txn: lmdb.Transaction, rid: bytes, *, labels: bool = True
    ) -> storage_pb2.RecordHeader | None:
        """The stored header of record `rid` with its labels; None when unknown."""
        value = txn.get(rid, db=self._records)
        if value is None:
            return None
        header = storage_pb2.RecordHeader.FromString(value)
        if labels:
            cursor = txn.cursor(db=self._labels)
            found = cursor.set_range(rid)
            while found:
                key = cursor.key()
                if key[:16] != rid:
                    break
                header.labels[bytes(key[16:]).decode()] = bytes(cursor.value()).decode()
                found = cursor.next()
        return header

    # -- records --------------------------------------------------------------------

    def get(self, record_id: str) -> storage_pb2.RecordHeader:
        """The header of one record (PARTIAL or COMPLETE); RecordNotFound when unknown."""
        rid = rec.record_key(record_id)
        with self._read() as txn:
            header = self._load(txn, rid)
        if header is None:
            raise RecordNotFound(f"no record with id {record_id}")
        return header

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
                header = self._load(txn, rid)
                if header is not None and (not model or header.model == model):
                    headers.append(header)
        return headers

    def list_records(
        self,
        model: str = "",
        labels: Mapping[str, str] | None = None,
        since_ms: int = 0,
        until_ms: int = 0,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[storage_pb2.RecordHeader], str]:
        """Records matching every filter, newest first; (page, next page token).

        Times are [since_ms, until_ms) on created_at_ms, 0 = unbounded. A page may be
        short (even empty) with a token when LIST_SCAN_LIMIT records were examined or
        LIST_PAGE_BYTES of headers gathered; the token is empty once no records are left.
        """
        if since_ms < 0 or until_ms < 0:
            raise InvalidRequest("since_ms and until_ms must be >= 0 (0 = unbounded)")
        if since_ms and until_ms and since_ms >= until_ms:
            raise InvalidRequest(f"empty time range: since_ms {since_ms} >= until_ms {until_ms}")
        size = page_size or DEFAULT_PAGE_SIZE
        if not 0 < size <= MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size {page_size} outside 1..{MAX_PAGE_SIZE}")
        start: bytes | None = None
        if page_token:
            try:
                start = rec.record_key(page_token)
            except InvalidRequest:
                raise InvalidRequest(f"malformed page token {page_token!r}") from None
        wanted = [(k.encode(), v.encode()) for k, v in (labels or {}).items()]
        page: list[storage_pb2.RecordHeader] = []
        page_bytes = 0
        with self._read() as txn:
            cursor = txn.cursor(db=self._records)
            if start is None:
                found = cursor.last()
            else:  # the record just before the token (the token's may have been deleted)
                found = cursor.prev() if cursor.set_range(start) else cursor.last()
            examined = 0
            while found:
                rid = bytes(cursor.key())
                examined += 1
                if all(txn.get(rid + k, db=self._labels) == v for k, v in wanted):
                    header = storage_pb2.RecordHeader.FromString(cursor.value())
                    if (
                        (not model or header.model == model)
                        and header.created_at_ms >= since_ms
                        and (not until_ms or header.created_at_ms < until_ms)
                    ):
                        loaded = self._load(txn, rid)
                        assert loaded is not None
                        page.append(loaded)
                        page_bytes += loaded.ByteSize()
                found = cursor.prev()
                full = len(page) >= size or page_bytes >= LIST_PAGE_BYTES
                if found and (full or examined >= LIST_SCAN_LIMIT):
                    return page, rid.hex()
        return page, ""

    def stats(self) -> StoreStats:
        """Counters kept by the writes (no scan) and the size of the LMDB file."""
        with self._read() as txn:
            counts = self._counters.read(txn)
            page_size = txn.stat(self._records)["psize"]
        info = self._env.info()
        return StoreStats(
            records=counts.records,
            complete_records=counts.complete_records,
            activation_bytes=counts.activation_bytes,
            prompt_hashes=counts.prompt_hashes,
            models=dict(sorted(counts.models.items())),
            lmdb_used_bytes=(info["last_pgno"] + 1) * page_size,
            lmdb_map_size=info["map_size"],
            stored_bytes=counts.stored_bytes,
        )

    # -- activations ----------------------------------------------------------------

    def select(
        self,
        record_id: str,
        layers: Sequence[int] = (),
        row_start: int = 0,
        row_end: int = 0,
    ) -> Selection:
        """The checked selection of a complete record's layers and rows [row_start, row_end).

        Layers in request order (every stored layer when empty); `row_end` 0 means to
        the end.
        """
        header = self.get(record_id)
        if header.status != COMPLETE:
            raise PartialRecord(
                f"record {record_id} is partial: its activations have not all arrived"
            )
        chosen = rec.resolve_layers(header, list(layers))
        end = row_end or header.num_positions
        # An empty range of a record that has rows is a mistake (`--rows 12:` of 12 rows).
        empty = row_start == end and header.num_positions > 0
        if not row_start <= end <= header.num_positions or empty:
            raise InvalidRequest(
                f"rows [{row_start}, {row_end or 'end'}) outside record {record_id}, "
                f"which has {header.num_positions} positions"
            )
        return Selection(header, chosen, row_start, end)

    def stream_activations(self, selection: Selection) -> Iterator[bytes]:
        """Serialized `ActivationChunk`s of `selection`, layer by layer in ascending rows.

        The chunks are read lazily, in batches, decompressed, and encoded straight from
        LMDB's buffers (wire.py).
        """
        return self._iter_chunks(
            selection.header, selection.layers, selection.row_start, selection.row_end
        )

    def copy_activations(self, selection: Selection, out: mmap.mmap) -> Iterator[int]:
        """Copy `selection` into `out`, a layer at a time; yields each layer's offset.

        Layer k of the selection goes to k x `selection.layer_bytes` as one contiguous
        (rows x hidden) block, copied from LMDB's map (decompressed first when stored
        compressed). `out` must hold `selection.nbytes`.
        """
        header = selection.header
        start, end = selection.row_start, selection.row_end
        decompress = codecs.decompressor(codecs.parse(header.compression))
        target = np.frombuffer(out, np.uint8, selection.nbytes)
        for index, layer in enumerate(selection.layers):
            base = index * selection.layer_bytes
            if not selection.layer_bytes:
                yield base
                continue
            with self._read() as txn:  # one layer is at most a few tens of MiB
                self._still_there(txn, header.record_id)
                self._copy_layer(txn, header, layer, start, end, decompress,
                                 target[base : base + selection.layer_bytes])  # fmt: skip
            yield base

    def read_rows(
        self, header: storage_pb2.RecordHeader, layers: Sequence[int], start: int, end: int
    ) -> list[np.ndarray]:
        """Rows [start, end) of each of `layers` of a complete record, as raw bytes (uint8,
        decompressed), all from one read transaction. For small selections (features)."""
        decompress = codecs.decompressor(codecs.parse(header.compression))
        blocks = [np.empty((end - start) * rec.row_bytes(header), np.uint8) for _ in layers]
        with self._read() as txn:
            self._still_there(txn, header.record_id)
            for layer, block in zip(layers, blocks, strict=True):
                self._copy_layer(txn, header, layer, start, end, decompress, block)
        return blocks

    def _still_there(self, txn: lmdb.Transaction, record_id: str) -> None:
        """RecordNotFound if the record was deleted since its header was read. A long read spans
        several transactions; within one, a record is there whole or not at all."""
        if txn.get(rec.record_key(record_id), db=self._records) is None:
            raise RecordNotFound(f"record {record_id} was deleted while it was being read")

    def _copy_layer(
        self,
        txn: lmdb.Transaction,
        header: storage_pb2.RecordHeader,
        layer: int,
        start: int,
        end: int,
        decompress: codecs.Codec | None,
        target: np.ndarray,
    ) -> None:
        """Copy rows [start, end) of `layer` into `target` (uint8, exactly their bytes);
        RuntimeError when the stored chunks do not cover them."""
        width = rec.row_bytes(header)
        prefix = rec.layer_prefix(rec.record_key(header.record_id), layer)
        copied = 0
        for _, lo, rows in self._clipped_chunks(txn, prefix, prefix, start, end, width, decompress):
            at = (lo - start) * width
            # numpy copies without the GIL: other readers' copies run too.
            target[at : at + len(rows)] = np.frombuffer(rows, np.uint8)
            copied += len(rows)
        if copied != len(target):
            raise RuntimeError(
                f"record {header.record_id} layer {layer}: found {copied} bytes of rows "
                f"[{start}, {end}), expected {len(target)}"
            )

    def _iter_chunks(
        self, header: storage_pb2.RecordHeader, layers: list[int], start: int, end: int
    ) -> Iterator[bytes]:
        rid = rec.record_key(header.record_id)
        width = rec.row_bytes(header)
        sequence = 0
        if start >= end or width == 0:
            return
        for layer in layers:
            resume: bytes | None = rec.layer_prefix(rid, layer)
            while resume is not None:
                batch, resume = self._read_batch(
                    header, rid, layer, resume, start, end, width, sequence
                )
                sequence += len(batch)
                yield from batch

    def _read_batch(
        self,
        header: storage_pb2.RecordHeader,
        rid: bytes,
        layer: int,
        first_key: bytes,
        start: int,
        end: int,
        width: int,
        sequence: int,
    ) -> tuple[list[bytes], bytes | None]:
        """Encoded chunks of `layer` from `first_key` on, up to about READ_BATCH_BYTES.

        Returns the batch and the key to resume from (None when the layer is done).
        """
        prefix = rec.layer_prefix(rid, layer)
        decompress = codecs.decompressor(codecs.parse(header.compression))
        batch: list[bytes] = []
        size = 0
        with self._read() as txn:
            self._still_there(txn, header.record_id)
            for chunk_start, lo, rows in self._clipped_chunks(
                txn, prefix, first_key, start, end, width, decompress
            ):
                count = len(rows) // width
                batch.append(
                    encode_chunk(header.record_id, sequence + len(batch), layer, lo, count, rows)
                )
                size += len(rows)
                if size >= READ_BATCH_BYTES:
                    return batch, rec.chunk_key(rid, layer, chunk_start + 1)
        return batch, None

    def _clipped_chunks(
        self,
        txn: lmdb.Transaction,
        prefix: bytes,
        first_key: bytes,
        start: int,
        end: int,
        width: int,
        decompress: codecs.Codec | None,
    ) -> Iterator[tuple[int, int, memoryview]]:
        """The stored chunks under `prefix` (one layer) from `first_key` on that hold rows
        of [start, end): (chunk's first row, first row given, those rows' bytes).

        The bytes are LMDB's own buffer (or the decompressed chunk): use them before the
        next item.
        """
        cursor = txn.cursor(db=self._chunks)
        found = cursor.set_range(first_key)
        while found:
            key = bytes(cursor.key())
            if key[: len(prefix)] != prefix:
                return
            _, chunk_start = rec.split_chunk_key(key)
            if chunk_start >= end:
                return
            value = cursor.value()
            if decompress is not None:
                value = memoryview(decompress(value))
            lo, hi = max(start, chunk_start), min(end, chunk_start + len(value) // width)
            if lo < hi:
                rows = value[(lo - chunk_start) * width : (hi - chunk_start) * width]
                yield chunk_start, lo, rows
            found = cursor.next()
