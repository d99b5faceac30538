"""Protobuf wire encoding of `ActivationChunk`, straight from LMDB's buffers.

`ActivationChunk(data=bytes(view)).SerializeToString()` copies the rows three times
(out of the map, into the message, into the serialized string). `encode_chunk` writes
the same bytes with one copy: the few small fields, then the data field's tag and length,
then the rows joined in from the buffer. The servicer yields these bytes and the server
passes them to gRPC unchanged (see interceptors.py).
"""

from __future__ import annotations


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
