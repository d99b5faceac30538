"""The dtypes activations are captured, stored and read in: one table for every side.

`RecordHeader.dtype` carries the name. Rows travel and rest as little-endian bytes of
that dtype; numpy has no bfloat16, so its rows are read as their uint16 bit patterns
(`numpy`) and widened exactly by `bf16_bits_to_float32`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dtype:
    name: str  # as RecordHeader.dtype and torch name it
    code: int  # in the capture frames from vLLM's worker (one byte)
    itemsize: int
    numpy: str  # numpy dtype whose little-endian bytes are the stored values
    safetensors: str  # the dtype tag of a safetensors file


DTYPES: dict[str, Dtype] = {
    d.name: d
    for d in (
        Dtype("float32", 1, 4, "<f4", "F32"),
        Dtype("bfloat16", 2, 2, "<u2", "BF16"),
        Dtype("float16", 3, 2, "<f2", "F16"),
    )
}
BY_CODE: dict[int, Dtype] = {d.code: d for d in DTYPES.values()}


def dtype(name: str) -> Dtype:
    """The table's row for `name`; ValueError naming the dtypes there are."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype {name!r} is not one of {sorted(DTYPES)}") from None


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact float32 values of bfloat16 numbers given as their uint16 bit patterns."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of float32 values, rounded to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def to_float32(raw: np.ndarray, name: str) -> np.ndarray:
    """Stored values (their `numpy` form) as float32, exactly."""
    if name == "bfloat16":
        return bf16_bits_to_float32(raw)
    return raw.astype(np.float32)
