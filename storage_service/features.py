"""The Features RPC: one pooled float32 vector per record and layer, computed next to LMDB.

Only the rows a pooling needs are read (one row for `last_prompt`), converted to float32
and pooled here (actlog_common/pooling.py has the rule), so a probe over thousands of
records moves kilobytes per record instead of its whole sequence. Vectors are streamed in
batches of about BATCH_BYTES.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from actlog_common.dtypes import DTYPES, to_float32
from actlog_common.pooling import POOLING_NAMES, PoolingError, pool, pooled_rows
from actlog_common.v1 import storage_pb2
from storage_service import records as rec
from storage_service.errors import InvalidRequest, PartialRecord, StorageError
from storage_service.queries import COMPLETE, MAX_PAGE_SIZE, Queries

# Encoded bytes per streamed batch (vectors, ids, labels, skipped reasons), below gRPC's
# default 4 MiB message limit (so a client with default channel options can read them).
BATCH_BYTES = 3 << 20
RECORD_OVERHEAD = 16  # a repeated field's tag and length, and the vectors' framing
BATCH_RECORDS = 4096
SKIPPED_PER_BATCH = 4096  # skipped records' reasons are sent as they pile up, too


@dataclass
class _Batch:
    records: list[storage_pb2.FeatureRecord] = field(default_factory=list)
    vectors: list[list[np.ndarray]] = field(default_factory=list)  # per layer
    skipped: list[storage_pb2.SkippedRecord] = field(default_factory=list)
    nbytes: int = 0


class FeatureQuery:
    """One Features call: the records it selects, checked as they come, and their vectors."""

    def __init__(self, store: Queries, request: storage_pb2.FeaturesRequest) -> None:
        if request.pooling not in POOLING_NAMES:
            raise InvalidRequest(
                f"pooling {request.pooling} is not one of "
                + ", ".join(f"{value} ({name})" for value, name in POOLING_NAMES.items())
            )
        filtered = request.model or request.labels or request.since_ms or request.until_ms
        if request.record_ids and filtered:
            raise InvalidRequest("give record_ids or filters (model, labels, times), not both")
        if request.position and request.pooling != storage_pb2.POOLING_POSITION:
            raise InvalidRequest(
                f"position {request.position} is only for pooling position, not "
                f"{POOLING_NAMES[request.pooling]}"
            )
        for record_id in request.record_ids:
            rec.record_key(record_id)  # a malformed id is the caller's mistake, never skipped
        self._store = store
        self._request = request
        self._requested = list(request.layers)
        self._layers: list[int] | None = None  # fixed by the first usable record
        self._hidden = 0

    def batches(self) -> Iterator[storage_pb2.FeaturesBatch]:
        """The vectors of every usable record, in selection order, a batch at a time."""
        batch = _Batch()
        sent = False
        for record_id, header in self._selection():
            try:
                if header is None:
                    header = self._store.get(record_id)  # RecordNotFound when unknown
                rows, vectors = self._pool(header)
            except (StorageError, PoolingError) as error:
                if not self._request.skip_unusable:
                    if isinstance(error, PoolingError):
                        raise InvalidRequest(str(error)) from None
                    raise
                skipped = storage_pb2.SkippedRecord(record_id=record_id, reason=str(error))
                batch.skipped.append(skipped)
                batch.nbytes += skipped.ByteSize() + RECORD_OVERHEAD
                if len(batch.skipped) >= SKIPPED_PER_BATCH or batch.nbytes > BATCH_BYTES:
                    yield self._encode(batch)
                    sent = True
                    batch = _Batch()
                continue
            record = storage_pb2.FeatureRecord(
                record_id=header.record_id,
                prompt_hash=header.prompt_hash,
                model=header.model,
                labels=dict(header.labels),
                created_at_ms=header.created_at_ms,
                row_start=rows[0],
                row_end=rows[1],
            )
            # The batch's whole encoded size: labels can outweigh the vectors.
            size = 4 * self._hidden * len(vectors) + record.ByteSize() + RECORD_OVERHEAD
            if batch.records and (
                batch.nbytes + size > BATCH_BYTES or len(batch.records) >= BATCH_RECORDS
            ):
                yield self._encode(batch)
                sent = True
                batch = _Batch()
            if not batch.vectors:
                batch.vectors = [[] for _ in vectors]
            for column, vector in zip(batch.vectors, vectors, strict=True):
                column.append(vector)
            batch.records.append(record)
            batch.nbytes += size
        if batch.records or batch.skipped or not sent:
            yield self._encode(batch)

    def _selection(self) -> Iterator[tuple[str, storage_pb2.RecordHeader | None]]:
        """(record id, its header when already loaded) in the call's order."""
        request = self._request
        if request.record_ids:
            for record_id in request.record_ids:
                yield record_id, None
            return
        token = ""
        while True:
            page, token = self._store.list_records(
                model=request.model,
                labels=dict(request.labels),
                since_ms=request.since_ms,
                until_ms=request.until_ms,
                page_size=MAX_PAGE_SIZE,
                page_token=token,
            )
            for header in page:
                yield header.record_id, header
            if not token:
                return

    def _pool(self, header: storage_pb2.RecordHeader) -> tuple[tuple[int, int], list[np.ndarray]]:
        """(rows pooled, one vector per layer) of one record; StorageError or PoolingError
        when it cannot give them."""
        record_id = header.record_id
        if header.status != COMPLETE:
            raise PartialRecord(
                f"record {record_id} is partial: its activations have not all arrived"
            )
        layers = rec.resolve_layers(header, self._requested or list(self._layers or []))
        if self._layers is None:
            self._layers, self._hidden = layers, header.hidden_size
        elif layers != self._layers:
            raise InvalidRequest(
                f"record {record_id}: layers {self._requested} are its layers {layers}, but "
                f"{self._layers} for the call's earlier records (another model? filter by model)"
            )
        if header.hidden_size != self._hidden:
            raise InvalidRequest(
                f"record {record_id} has hidden size {header.hidden_size}, the call's earlier "
                f"records {self._hidden} (another model? filter by model)"
            )
        rows = pooled_rows(
            self._request.pooling,
            header.prompt_length,
            header.num_positions,
            self._request.position,
            record_id,
        )
        stored = DTYPES[header.dtype]
        vectors = []
        for block in self._store.read_rows(header, layers, rows.start, rows.end):
            raw = np.frombuffer(block, stored.numpy).reshape(rows.end - rows.start, self._hidden)
            vectors.append(pool(to_float32(raw, header.dtype), rows.mean))
        return (rows.start, rows.end), vectors

    def _encode(self, batch: _Batch) -> storage_pb2.FeaturesBatch:
        layers = self._layers or []
        columns = batch.vectors or [[] for _ in layers]
        return storage_pb2.FeaturesBatch(
            records=batch.records,
            hidden_size=self._hidden,
            layers=[
                storage_pb2.LayerFeatures(
                    layer=layer, data=np.stack(column).astype("<f4").tobytes() if column else b""
                )
                for layer, column in zip(layers, columns, strict=True)
            ],
            skipped=batch.skipped,
        )
