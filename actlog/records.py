"""What the storage client returns besides arrays: records, storage statistics, deletions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from actlog.errors import InvalidArgumentError
from actlog_common.layers import LayerChoice, LayerError, LayerSpec
from actlog_common.v1 import storage_pb2


@dataclass(frozen=True)
class Record:
    """One stored completion choice: everything but its activations (see RecordHeader)."""

    record_id: str
    prompt_hash: str
    prompt: str
    response: str
    model: str
    token_ids: tuple[int, ...]
    token_strings: tuple[str, ...]
    prompt_length: int
    sampling_params: dict[str, Any]
    layers: tuple[int, ...]
    num_positions: int
    hidden_size: int
    dtype: str
    num_layers: int
    finish_reason: str
    created_at_ms: int
    labels: dict[str, str]
    status: str  # "COMPLETE", "PARTIAL" or "UNSPECIFIED"
    activation_bytes: int
    choice_index: int
    request_id: str
    compression: str = "none"  # how storage keeps the activations; reads are uncompressed
    stored_bytes: int = 0  # activation bytes on disk (after compression), once complete

    @property
    def is_complete(self) -> bool:
        return self.status == "COMPLETE"

    @classmethod
    def from_pb(cls, header: storage_pb2.RecordHeader) -> Record:
        return cls(
            record_id=header.record_id,
            prompt_hash=header.prompt_hash,
            prompt=header.prompt,
            response=header.response,
            model=header.model,
            token_ids=tuple(header.token_ids),
            token_strings=tuple(header.token_strings),
            prompt_length=header.prompt_length,
            sampling_params=_parse_json(header.sampling_params_json),
            layers=tuple(header.layers),
            num_positions=header.num_positions,
            hidden_size=header.hidden_size,
            dtype=header.dtype,
            num_layers=header.num_layers,
            finish_reason=header.finish_reason,
            created_at_ms=header.created_at_ms,
            labels=dict(header.labels),
            status=storage_pb2.RecordStatus.Name(header.status).removeprefix("RECORD_STATUS_"),
            activation_bytes=header.activation_bytes,
            choice_index=header.choice_index,
            request_id=header.request_id,
            compression=header.compression or "none",
            stored_bytes=header.stored_bytes,
        )


def _parse_json(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"_unparsed": text}
    return value if isinstance(value, dict) else {"_value": value}


@dataclass(frozen=True)
class ModelStats:
    records: int
    activation_bytes: int


@dataclass(frozen=True)
class StorageStats:
    records: int
    complete_records: int
    activation_bytes: int
    prompt_hashes: int
    models: dict[str, ModelStats] = field(default_factory=dict)
    lmdb_used_bytes: int = 0
    lmdb_map_size: int = 0
    stored_bytes: int = 0  # activation bytes on disk, after compression

    @classmethod
    def from_pb(cls, response: storage_pb2.StatsResponse) -> StorageStats:
        return cls(
            records=response.records,
            complete_records=response.complete_records,
            activation_bytes=response.activation_bytes,
            prompt_hashes=response.prompt_hashes,
            models={
                m.model: ModelStats(records=m.records, activation_bytes=m.activation_bytes)
                for m in response.models
            },
            lmdb_used_bytes=response.lmdb_used_bytes,
            lmdb_map_size=response.lmdb_map_size,
            stored_bytes=response.stored_bytes,
        )


@dataclass(frozen=True)
class DeletedRecord:
    record_id: str
    activation_bytes: int
    stored_bytes: int


def resolve_record_layers(record: Record, requested: LayerChoice) -> list[int]:
    """The stored layers a read of `record` gets (`actlog_common.layers.LayerSpec`; None or
    `all`: every stored layer); the error the server would give, without asking it."""
    try:
        spec = LayerSpec.parse(requested)
        return spec.of_stored(record.layers, record.num_layers, record.record_id)
    except LayerError as error:
        raise InvalidArgumentError(str(error)) from None
