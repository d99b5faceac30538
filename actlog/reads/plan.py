"""One read of a record's activations: its layers and rows, and where each chunk's rows go.

Every transport (the gRPC stream, a shared-memory arena) hands chunks to `put_rows`, which
checks that they fit the selection and converts them into the caller's arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from actlog.errors import ActlogError
from actlog.reads.shm import Arena
from actlog.records import Record
from actlog_common.dtypes import DTYPES
from actlog_common.v1 import storage_pb2
from actlog_common.wire import ChunkView


@dataclass(frozen=True)
class ReadPlan:
    """What one get_activations call reads: resolved layers, rows [row_start, row_end)."""

    record: Record
    requested: list[int]
    layers: list[int]
    row_start: int
    row_end: int  # 0 = to the end

    @property
    def rows(self) -> int:
        return max((self.row_end or self.record.num_positions) - self.row_start, 0)

    @property
    def row_bytes(self) -> int:
        return self.record.hidden_size * DTYPES[self.record.dtype].itemsize

    @property
    def nbytes(self) -> int:
        return len(self.layers) * self.rows * self.row_bytes

    def request(self, **shm: Any) -> storage_pb2.StreamActivationsRequest:
        return storage_pb2.StreamActivationsRequest(
            record_id=self.record.record_id,
            layers=self.requested,
            row_start=self.row_start,
            row_end=self.row_end,
            **shm,
        )

    def split(self, max_bytes: int) -> Iterator[ReadPlan]:
        """This selection in pieces of at most `max_bytes`: whole, by layer, then by rows."""
        if self.nbytes <= max_bytes:
            yield self
            return
        step = max(1, max_bytes // max(self.row_bytes, 1))
        end = self.row_end or self.record.num_positions
        for layer in self.layers:
            for start in range(self.row_start, end, step):
                yield ReadPlan(self.record, [layer], [layer], start, min(start + step, end))

    def empty_arrays(self, as_float32: bool) -> dict[int, np.ndarray]:
        """Arrays to read the selection into: float32, or the stored (raw) dtype."""
        dtype = np.dtype(np.float32) if as_float32 else np.dtype(DTYPES[self.record.dtype].numpy)
        shape = (self.rows, self.record.hidden_size)
        return {layer: np.empty(shape, dtype) for layer in self.layers}

    def check_rows(self, filled: Mapping[int, int]) -> None:
        short = {layer: rows for layer, rows in filled.items() if rows != self.rows}
        if short:
            raise ActlogError(
                f"record {self.record.record_id}: the stream returned {short} rows per layer, "
                f"expected {self.rows}"
            )


def copy_out(sel: ReadPlan, chunk: ChunkView, arena: Arena, arrays: dict[int, np.ndarray]) -> None:
    """Copy (converting to the arrays' dtype) one chunk's rows from the arena."""
    if chunk.data or chunk.shm_offset + chunk.row_count * sel.row_bytes > arena.size:
        raise ActlogError(f"record {sel.record.record_id}: malformed chunk {chunk}")
    count = chunk.row_count * sel.record.hidden_size
    raw_dtype = np.dtype(DTYPES[sel.record.dtype].numpy)
    put_rows(sel, chunk, np.frombuffer(arena.buffer, raw_dtype, count, chunk.shm_offset), arrays)


def put_rows(
    sel: ReadPlan, chunk: ChunkView, block: np.ndarray, arrays: dict[int, np.ndarray]
) -> None:
    """Put one chunk's rows (`block`: its raw values) in place, converted to the arrays' dtype."""
    hidden, offset = sel.record.hidden_size, chunk.row_start - sel.row_start
    if (
        chunk.layer not in arrays
        or offset < 0
        or offset + chunk.row_count > sel.rows
        or block.size != chunk.row_count * hidden
    ):
        raise ActlogError(f"record {sel.record.record_id}: malformed chunk {chunk}")
    target = arrays[chunk.layer][offset : offset + chunk.row_count]
    if target.dtype == np.float32 and sel.record.dtype == "bfloat16":
        bits = target.view(np.uint32)  # float32 = the bfloat16 bits followed by 16 zeros
        bits[...] = block.reshape(target.shape)
        bits <<= 16
    else:
        target[...] = block.reshape(target.shape)
