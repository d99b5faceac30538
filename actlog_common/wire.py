"""Zero-copy decoding of `ActivationChunk` messages, for the client and the storage service.

Reading `ActivationChunk.data` from a parsed protobuf copies the rows out of the message
(after the parse copied them in); a `ChunkView`'s data is a memoryview into the received
bytes instead. Anything the fast path does not expect is left to protobuf, which also
reports what is malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actlog_common.v1 import storage_pb2


@dataclass(frozen=True)
class ChunkView:
    """An `ActivationChunk` whose data is a view into the received message (no copy)."""

    record_id: str
    sequence: int
    layer: int
    row_start: int
    row_count: int
    data: memoryview
    shm_offset: int = 0


_VARINT_FIELDS = {2: "sequence", 3: "layer", 4: "row_start", 5: "row_count", 7: "shm_offset"}


class Unexpected(Exception):
    """The message is not a plain chunk: let protobuf parse it."""


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise Unexpected
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def read_len(view: memoryview, pos: int) -> tuple[memoryview, int]:
    """A length-delimited field's value at `pos` (after its key), and the position past it."""
    length, pos = _read_varint(view, pos)
    if pos + length > len(view):
        raise Unexpected
    return view[pos : pos + length], pos + length


def read_key(view: memoryview, pos: int) -> tuple[int, int]:
    return _read_varint(view, pos)


def empty_fields(view: memoryview) -> dict[str, Any]:
    return {"record_id": "", "sequence": 0, "layer": 0, "row_start": 0, "row_count": 0,
            "data": view[:0], "shm_offset": 0}  # fmt: skip


def merge_chunk(view: memoryview, fields: dict[str, Any]) -> None:
    """Parse a serialized ActivationChunk into `fields` (later values win, as in protobuf)."""
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        number, wire_type = key >> 3, key & 7
        if number in _VARINT_FIELDS and wire_type == 0:
            fields[_VARINT_FIELDS[number]], pos = _read_varint(view, pos)
        elif number in (1, 6) and wire_type == 2:
            value, pos = read_len(view, pos)
            if number == 1:
                fields["record_id"] = str(value, "utf-8")
            else:
                fields["data"] = value
        else:
            raise Unexpected


def decode_chunk(message: bytes) -> ChunkView:
    """A serialized ActivationChunk as a `ChunkView` (protobuf parses what is unusual)."""
    view = memoryview(message)
    fields = empty_fields(view)
    try:
        merge_chunk(view, fields)
    except (Unexpected, UnicodeDecodeError, ValueError):
        chunk = storage_pb2.ActivationChunk.FromString(message)
        fields = {name: getattr(chunk, name) for name in fields}
        fields["data"] = memoryview(chunk.data)
    return ChunkView(**fields)
