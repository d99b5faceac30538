"""The chunk codecs agree with protobuf, byte for byte and field for field."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from actlog_common.v1 import storage_pb2
from actlog_common.wire import decode_chunk
from storage_service.wire import ChunkView, decode_ingest_request, encode_chunk


@pytest.mark.parametrize(
    ("sequence", "layer", "row_start", "row_count", "size"),
    [
        (0, 0, 0, 1, 8),
        (1, 30, 127, 128, 1 << 20),
        (300, 0xFFFF, 2**32 - 1, 5, 0),
        (7, 1, 0, 3, 130),
    ],
)
def test_encode_chunk_matches_protobuf(sequence, layer, row_start, row_count, size) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    fields = {"sequence": sequence, "layer": layer, "row_start": row_start,
              "row_count": row_count}  # fmt: skip
    expected = storage_pb2.ActivationChunk(record_id="ab" * 16, data=data, **fields)
    encoded = encode_chunk("ab" * 16, data=memoryview(data), **fields)
    assert encoded == expected.SerializeToString()
    assert storage_pb2.ActivationChunk.FromString(encoded) == expected


def test_decode_ingest_request_gives_chunks_as_views() -> None:
    data = bytes(range(200)) * 50
    chunk = storage_pb2.ActivationChunk(
        record_id="cd" * 16, sequence=3, layer=30, row_start=128, row_count=5, data=data
    )
    message = storage_pb2.IngestRequest(chunk=chunk).SerializeToString()
    view = decode_ingest_request(message)
    assert isinstance(view, ChunkView)
    assert (view.record_id, view.sequence, view.layer, view.row_start, view.row_count) == (
        "cd" * 16, 3, 30, 128, 5,
    )  # fmt: skip
    assert isinstance(view.data, memoryview) and view.data == data
    assert view.data.obj is message  # no copy
    # Concatenated messages merge, as protobuf does (later scalars win).
    first = storage_pb2.IngestRequest(chunk=storage_pb2.ActivationChunk(record_id="x", layer=9))
    merged = decode_ingest_request(first.SerializeToString() + message)
    assert isinstance(merged, ChunkView)
    assert (merged.record_id, merged.layer, bytes(merged.data)) == ("cd" * 16, 30, data)


@pytest.mark.parametrize(
    "message",
    [
        storage_pb2.IngestRequest(header=storage_pb2.RecordHeader(record_id="ab")),
        storage_pb2.IngestRequest(commit=storage_pb2.IngestCommit(num_chunks=2)),
        storage_pb2.IngestRequest(),
    ],
)
def test_decode_ingest_request_leaves_the_rest_to_protobuf(message) -> None:
    decoded = decode_ingest_request(message.SerializeToString())
    assert isinstance(decoded, storage_pb2.IngestRequest) and decoded == message


def test_decode_ingest_request_reports_malformed_messages_like_protobuf() -> None:
    with pytest.raises(DecodeError):
        decode_ingest_request(b"\x12\x05\x0a\x09abc")  # lengths beyond the message
    with pytest.raises(DecodeError):
        decode_ingest_request(b"\x12\x03\x0a\x01\xff")  # record id not UTF-8


@pytest.mark.parametrize(
    "chunk",
    [
        storage_pb2.ActivationChunk(
            record_id="ef" * 16, sequence=2, layer=30, row_start=7, row_count=3, data=b"x" * 96
        ),
        storage_pb2.ActivationChunk(layer=4, row_start=0, row_count=512, shm_offset=3 << 30),
        storage_pb2.ActivationChunk(),
    ],
)
def test_decode_chunk_reads_what_protobuf_reads_without_copying(chunk) -> None:
    message = chunk.SerializeToString()
    view = decode_chunk(message)
    for name in ("record_id", "sequence", "layer", "row_start", "row_count", "shm_offset"):
        assert getattr(view, name) == getattr(chunk, name)
    assert bytes(view.data) == chunk.data
    if chunk.data:
        assert view.data.obj is message


def test_decode_chunk_leaves_unknown_fields_to_protobuf() -> None:
    chunk = storage_pb2.ActivationChunk(layer=3, data=b"abc")
    message = chunk.SerializeToString() + b"\x98\x01\x05"  # field 19, varint: unknown here
    view = decode_chunk(message)
    assert (view.layer, bytes(view.data)) == (3, b"abc")
    with pytest.raises(DecodeError):
        decode_chunk(b"\x32\x09abc")  # data longer than the message
