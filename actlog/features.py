"""Pooled feature vectors computed in storage (the Features RPC), as numpy matrices.

    with StorageClient() as client:
        feats = client.features(labels={"benchmark": "..."}, layers=[10, 20], pooling="last_prompt")
        X = feats[20]                       # (records, hidden) float32
        y = feats.label("hallucinated") == "true"

The poolings and the rows they read are defined in `actlog_common.pooling`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from actlog.errors import InvalidArgumentError
from actlog.filters import RecordFilter
from actlog_common.pooling import POOLING_NAMES, PoolingError, pooling_value
from actlog_common.v1 import storage_pb2


@dataclass(frozen=True)
class SkippedRecord:
    record_id: str
    reason: str


@dataclass(frozen=True)
class Features:
    """One vector per record and layer: row i of every matrix belongs to `record_ids[i]`.

    The order is the selection's: the ids as given, or newest first for filters (as
    `iter_records`), the same on every call over the same records.
    """

    pooling: str
    layers: tuple[int, ...]
    vectors: dict[int, np.ndarray]  # layer -> (records, hidden_size) float32
    record_ids: list[str]
    labels: list[dict[str, str]]
    prompt_hashes: list[str]
    models: list[str]
    created_at_ms: list[int]
    rows: list[tuple[int, int]]  # the rows pooled per record, [start, end)
    hidden_size: int
    skipped: list[SkippedRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.record_ids)

    def __getitem__(self, layer: int) -> np.ndarray:
        """The (records, hidden_size) matrix of `layer` (negative: from the last one)."""
        if layer < 0 and -len(self.layers) <= layer:
            layer = self.layers[layer]
        try:
            return self.vectors[layer]
        except KeyError:
            raise KeyError(
                f"layer {layer} was not pooled; these were: {list(self.layers)}"
            ) from None

    def label(self, key: str, missing: str = "") -> np.ndarray:
        """Each record's value of label `key` (`missing` where it has none), as strings."""
        return np.array([labels.get(key, missing) for labels in self.labels], dtype=object)


def features_request(
    record_ids: Sequence[str] | None,
    layers: Sequence[int],
    pooling: str,
    position: int,
    where: RecordFilter,
    skip_unusable: bool,
) -> storage_pb2.FeaturesRequest:
    try:
        value = pooling_value(pooling)
    except PoolingError as error:
        raise InvalidArgumentError(str(error)) from None
    return storage_pb2.FeaturesRequest(
        record_ids=list(record_ids or []),
        **where.request_fields(),
        layers=list(layers),
        pooling=value,
        position=position,
        skip_unusable=skip_unusable,
    )


def collect(pooling: int, batches: Iterable[storage_pb2.FeaturesBatch]) -> Features:
    """A `Features` of every batch of one Features call."""
    columns: dict[int, list[np.ndarray]] = {}
    records: list[storage_pb2.FeatureRecord] = []
    skipped: list[SkippedRecord] = []
    hidden = 0
    for batch in batches:
        hidden = batch.hidden_size or hidden
        skipped.extend(SkippedRecord(s.record_id, s.reason) for s in batch.skipped)
        records.extend(batch.records)
        for block in batch.layers:
            matrix = np.frombuffer(block.data, "<f4").reshape(-1, batch.hidden_size or 1)
            columns.setdefault(block.layer, []).append(matrix)
    vectors = {
        layer: np.concatenate(parts).astype(np.float32, copy=False).reshape(len(records), hidden)
        for layer, parts in columns.items()
    }
    return Features(
        pooling=POOLING_NAMES[pooling],
        layers=tuple(vectors),
        vectors=vectors,
        record_ids=[r.record_id for r in records],
        labels=[dict(r.labels) for r in records],
        prompt_hashes=[r.prompt_hash for r in records],
        models=[r.model for r in records],
        created_at_ms=[r.created_at_ms for r in records],
        rows=[(r.row_start, r.row_end) for r in records],
        hidden_size=hidden,
        skipped=skipped,
    )
