"""encode_chunk writes exactly the bytes protobuf would."""

from __future__ import annotations

import pytest

from actlog.v1 import storage_pb2
from storage_service.wire import encode_chunk


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
