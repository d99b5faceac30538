"""Record layout: key encodings, dtypes and header validation (no LMDB, no gRPC)."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Protocol

from actlog_common.dtypes import DTYPES
from actlog_common.hashing import is_prompt_hash
from actlog_common.ids import is_record_id
from actlog_common.layers import LayerError, resolve_stored_layers
from actlog_common.v1 import storage_pb2
from storage_service.errors import InvalidRequest

MAX_LAYER = 0xFFFF
# Label keys are part of an LMDB key (record id + key, at most 511 bytes); values are not.
MAX_LABEL_KEY_BYTES = 256
# LMDB keys hold at most 511 bytes; per-model counters are keyed by the model's name.
MAX_MODEL_NAME_BYTES = 256
# Positions fit the u32 row_start of chunk keys; 2**31 keeps every row index a signed int32.
MAX_POSITIONS = (1 << 31) - 1
MAX_LABEL_VALUE_BYTES = 64 << 10
# All of one record's labels together (STORAGE_MAX_LABEL_BYTES), so that any read of a record
# fits a gRPC message.
DEFAULT_MAX_LABEL_BYTES = 1 << 20


class ChunkLike(Protocol):
    """An ActivationChunk, or wire.ChunkView (the same fields, data as a view)."""

    record_id: str
    sequence: int
    layer: int
    row_start: int
    row_count: int


_LAYER_ROW = struct.Struct(">HI")  # layer u16 BE, row_start u32 BE
CHUNK_KEY_LEN = 16 + _LAYER_ROW.size


def record_key(record_id: str) -> bytes:
    """The 16 raw bytes of a record id; InvalidRequest when it is malformed."""
    if not is_record_id(record_id):
        raise InvalidRequest(f"malformed record id {record_id!r}: expected 32 lowercase hex chars")
    return bytes.fromhex(record_id)


def hash_key(prompt_hash: str) -> bytes:
    """The 32 raw bytes of a prompt hash; InvalidRequest when it is malformed."""
    if not is_prompt_hash(prompt_hash):
        raise InvalidRequest(
            f"malformed prompt hash {prompt_hash!r}: expected 64 lowercase hex chars "
            "(SHA-256 of the prompt's UTF-8 bytes)"
        )
    return bytes.fromhex(prompt_hash)


def chunk_key(rid: bytes, layer: int, row_start: int) -> bytes:
    """Key of the chunk of record `rid` (16 bytes) holding `layer` from `row_start`."""
    return rid + _LAYER_ROW.pack(layer, row_start)


def layer_prefix(rid: bytes, layer: int) -> bytes:
    return rid + struct.pack(">H", layer)


def label_key(rid: bytes, key: str) -> bytes:
    """Key of label `key` of record `rid` (16 bytes) in the labels sub-database."""
    return rid + key.encode()


def label_bytes(labels: Mapping[str, str]) -> int:
    """What a record's labels weigh against STORAGE_MAX_LABEL_BYTES: keys and values, UTF-8."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in labels.items())


def validate_labels(record_id: str, labels: Mapping[str, str], remove: Iterable[str] = ()) -> None:
    """Raise InvalidRequest unless `labels` (and keys to `remove`) can be stored."""
    removed = set(remove)
    for key in [*labels, *removed]:
        if not key:
            raise InvalidRequest(f"record {record_id}: empty label key")
        if len(key.encode()) > MAX_LABEL_KEY_BYTES:
            raise InvalidRequest(
                f"record {record_id}: label key {key[:40]!r}... is longer than "
                f"{MAX_LABEL_KEY_BYTES} bytes"
            )
    for key, value in labels.items():
        if len(value.encode()) > MAX_LABEL_VALUE_BYTES:
            raise InvalidRequest(
                f"record {record_id}: value of label {key!r} is longer than "
                f"{MAX_LABEL_VALUE_BYTES} bytes"
            )
    both = sorted(removed & set(labels))
    if both:
        raise InvalidRequest(f"record {record_id}: labels {both} are both set and removed")


def split_chunk_key(key: bytes) -> tuple[int, int]:
    """(layer, row_start) of a chunk key."""
    layer, row_start = _LAYER_ROW.unpack_from(key, 16)
    return layer, row_start


def row_bytes(header: storage_pb2.RecordHeader) -> int:
    """Bytes of one row (one position of one layer)."""
    return header.hidden_size * DTYPES[header.dtype].itemsize


def activation_bytes(header: storage_pb2.RecordHeader) -> int:
    return len(header.layers) * header.num_positions * row_bytes(header)


def validate_header(header: storage_pb2.RecordHeader, max_record_bytes: int = 0) -> None:
    """Raise InvalidRequest unless `header` describes a record storage can hold (of at most
    `max_record_bytes` of activations when that is set)."""
    record_key(header.record_id)
    hash_key(header.prompt_hash)
    if len(header.model.encode()) > MAX_MODEL_NAME_BYTES:
        raise InvalidRequest(
            f"record {header.record_id}: model name of {len(header.model.encode())} bytes, "
            f"more than {MAX_MODEL_NAME_BYTES}"
        )
    if header.num_positions > MAX_POSITIONS:
        raise InvalidRequest(
            f"record {header.record_id}: num_positions {header.num_positions} > {MAX_POSITIONS}"
        )
    if header.dtype not in DTYPES:
        raise InvalidRequest(
            f"record {header.record_id}: dtype {header.dtype!r} is not one of {sorted(DTYPES)}"
        )
    layers = list(header.layers)
    if layers != sorted(set(layers)):
        raise InvalidRequest(
            f"record {header.record_id}: layers must be ascending without repeats, got {layers}"
        )
    if layers and layers[-1] > MAX_LAYER:
        raise InvalidRequest(f"record {header.record_id}: layer {layers[-1]} > {MAX_LAYER}")
    if header.num_layers and layers and layers[-1] > header.num_layers:
        raise InvalidRequest(
            f"record {header.record_id}: layer {layers[-1]} beyond num_layers "
            f"{header.num_layers} (layers run 0..num_layers as in output_hidden_states)"
        )
    if layers and header.num_positions and header.hidden_size == 0:
        raise InvalidRequest(f"record {header.record_id}: hidden_size is 0")
    n_tokens = len(header.token_ids)
    if header.token_strings and len(header.token_strings) != n_tokens:
        raise InvalidRequest(
            f"record {header.record_id}: {len(header.token_strings)} token_strings for "
            f"{n_tokens} token_ids"
        )
    if header.prompt_length > n_tokens and n_tokens:
        raise InvalidRequest(
            f"record {header.record_id}: prompt_length {header.prompt_length} > "
            f"{n_tokens} token_ids"
        )
    if n_tokens and header.num_positions > n_tokens:
        raise InvalidRequest(
            f"record {header.record_id}: num_positions {header.num_positions} > "
            f"{n_tokens} token_ids"
        )
    validate_labels(header.record_id, header.labels)
    claimed = activation_bytes(header)
    if max_record_bytes and claimed > max_record_bytes:
        raise InvalidRequest(
            f"record {header.record_id}: {len(layers)} layers x {header.num_positions} positions "
            f"x {row_bytes(header)} bytes = {claimed} bytes of activations, more than the "
            f"maximum record size of {max_record_bytes} bytes (STORAGE_MAX_RECORD_BYTES)"
        )


def validate_chunk(header: storage_pb2.RecordHeader, chunk: ChunkLike, data_len: int) -> None:
    """Raise InvalidRequest unless `chunk` (with `data_len` data bytes) fits `header`.

    The length is passed in because each read of a protobuf bytes field copies it.
    """
    rid = header.record_id
    if chunk.record_id != rid:
        raise InvalidRequest(
            f"chunk {chunk.sequence} is for record {chunk.record_id!r}, "
            f"but this stream ingests record {rid}"
        )
    if chunk.layer not in header.layers:
        raise InvalidRequest(
            f"record {rid} chunk {chunk.sequence}: layer {chunk.layer} is not in the "
            f"header's layers {list(header.layers)}"
        )
    if chunk.row_count == 0:
        raise InvalidRequest(f"record {rid} chunk {chunk.sequence}: row_count is 0")
    if chunk.row_start + chunk.row_count > header.num_positions:
        raise InvalidRequest(
            f"record {rid} chunk {chunk.sequence}: rows [{chunk.row_start}, "
            f"{chunk.row_start + chunk.row_count}) beyond num_positions {header.num_positions}"
        )
    expected = chunk.row_count * row_bytes(header)
    if data_len != expected:
        raise InvalidRequest(
            f"record {rid} chunk {chunk.sequence}: {data_len} data bytes, expected "
            f"{expected} (row_count {chunk.row_count} x hidden_size {header.hidden_size} x "
            f"{DTYPES[header.dtype].itemsize} bytes of {header.dtype})"
        )


def resolve_layers(header: storage_pb2.RecordHeader, requested: list[int]) -> list[int]:
    """`actlog_common.layers.resolve_stored_layers` for a stored header."""
    try:
        return resolve_stored_layers(requested, header.layers, header.num_layers, header.record_id)
    except LayerError as error:
        raise InvalidRequest(str(error)) from None
