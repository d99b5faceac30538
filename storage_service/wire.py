"""Protobuf wire codecs of activation chunks that skip copying the rows.

Outgoing: `encode_chunk`. Incoming: `decode_ingest_request`.

`ActivationChunk(data=bytes(view)).SerializeToString()` copies the rows three times
(out of the map, into the message, into the serialized string). `encode_chunk` writes
the same bytes with one copy: the few small fields, then the data field's tag and length,
then the rows joined in from the buffer. The servicer yields these bytes and the server
passes them to gRPC unchanged (see interceptors.py).

`decode_ingest_request` parses an Ingest message whose item is a chunk into a `ChunkView`
whose data is a memoryview into the received bytes, instead of the copy protobuf makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actlog.v1 import storage_pb2


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, value: int) -> bytes:
    """A varint field (wire type 0); proto3 leaves zeros out."""
    return _varint(number << 3) + _varint(value) if value else b""


def encode_chunk(
    record_id: str,
    sequence: int,
    layer: int,
    row_start: int,
    row_count: int,
    data: bytes | memoryview,
) -> bytes:
    """The serialized `ActivationChunk` with these fields (identical to protobuf's)."""
    rid = record_id.encode()
    head = b"".join(
        (
            b"\x0a" + _varint(len(rid)) + rid if rid else b"",  # 1: record_id
            _field(2, sequence),
            _field(3, layer),
            _field(4, row_start),
            _field(5, row_count),
            b"\x32" + _varint(len(data)) if len(data) else b"",  # 6: data
        )
    )
    return b"".join((head, data))


@dataclass(frozen=True)
class ChunkView:
    """An `ActivationChunk` whose data is a view into the received message (no copy)."""

    record_id: str
    sequence: int
    layer: int
    row_start: int
    row_count: int
    data: memoryview


_CHUNK_FIELDS = {2: "sequence", 3: "layer", 4: "row_start", 5: "row_count"}


class _Unexpected(Exception):
    """The message is not a plain chunk: let protobuf parse it."""


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise _Unexpected
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _read_len(view: memoryview, pos: int) -> tuple[memoryview, int]:
    length, pos = _read_varint(view, pos)
    if pos + length > len(view):
        raise _Unexpected
    return view[pos : pos + length], pos + length


def _merge_chunk(view: memoryview, fields: dict[str, Any]) -> None:
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        number, wire_type = key >> 3, key & 7
        if number in _CHUNK_FIELDS and wire_type == 0:
            fields[_CHUNK_FIELDS[number]], pos = _read_varint(view, pos)
        elif number in (1, 6) and wire_type == 2:
            value, pos = _read_len(view, pos)
            if number == 1:
                fields["record_id"] = str(value, "utf-8")
            else:
                fields["data"] = value
        else:
            raise _Unexpected


def decode_ingest_request(message: bytes) -> storage_pb2.IngestRequest | ChunkView:
    """An IngestRequest as protobuf parses it, except that a chunk comes as a `ChunkView`.

    Reading `ActivationChunk.data` copies the rows out of the parsed message; the view
    does not. Anything but a plain chunk (a header, a commit, unknown fields, a malformed
    message) is left to protobuf, which also reports what is malformed.
    """
    view = memoryview(message)
    fields: dict[str, Any] = {
        "record_id": "", "sequence": 0, "layer": 0, "row_start": 0, "row_count": 0,
        "data": view[:0],
    }  # fmt: skip
    try:
        pos = 0
        while pos < len(view):  # the chunk field, possibly repeated (protobuf merges)
            key, pos = _read_varint(view, pos)
            if key != (2 << 3 | 2):
                raise _Unexpected
            inner, pos = _read_len(view, pos)
            _merge_chunk(inner, fields)
        if not len(view):
            raise _Unexpected
    except (_Unexpected, UnicodeDecodeError, ValueError):
        return storage_pb2.IngestRequest.FromString(message)
    return ChunkView(**fields)
