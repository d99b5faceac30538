"""Protobuf wire codecs of activation chunks that skip copying the rows.

Outgoing: `encode_chunk`. Incoming: `decode_ingest_request`.

`ActivationChunk(data=bytes(view)).SerializeToString()` copies the rows three times
(out of the map, into the message, into the serialized string). `encode_chunk` writes
the same bytes with one copy: the few small fields, then the data field's tag and length,
then the rows joined in from the buffer. The servicer yields these bytes and the server
passes them to gRPC unchanged (see interceptors.py).

`decode_ingest_request` parses an Ingest message whose item is a chunk into a `ChunkView`
(actlog/wire.py) whose data is a memoryview into the received bytes, instead of the copy
protobuf makes.
"""

from __future__ import annotations

from actlog_common.v1 import storage_pb2
from actlog_common.wire import ChunkView, Unexpected, empty_fields, merge_chunk, read_key, read_len

__all__ = ["ChunkView", "decode_ingest_request", "encode_chunk"]


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


def decode_ingest_request(message: bytes) -> storage_pb2.IngestRequest | ChunkView:
    """An IngestRequest as protobuf parses it, except that a chunk comes as a `ChunkView`.

    Reading `ActivationChunk.data` copies the rows out of the parsed message; the view
    does not. Anything but a plain chunk (a header, a commit, unknown fields, a malformed
    message) is left to protobuf, which also reports what is malformed.
    """
    view = memoryview(message)
    fields = empty_fields(view)
    try:
        pos = 0
        while pos < len(view):  # the chunk field, possibly repeated (protobuf merges)
            key, pos = read_key(view, pos)
            if key != (2 << 3 | 2):
                raise Unexpected
            inner, pos = read_len(view, pos)
            merge_chunk(inner, fields)
        if not len(view):
            raise Unexpected
    except (Unexpected, UnicodeDecodeError, ValueError):
        return storage_pb2.IngestRequest.FromString(message)
    return ChunkView(**fields)
