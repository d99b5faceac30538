"""Wire format of captured rows between vLLM's worker process and the inference service.

The worker sends one frame per step and group of requests that capture the same layers: a fixed
header, the layer indices, each request's (first position, row count, capture key), then the
rows as one block shaped [layers, rows of all the requests, hidden], requests in the order
listed. Kept light (no torch, no asyncio) so both sides share it; dtype codes are the table's.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from actlog_common.dtypes import DTYPES

MAGIC = b"ALC2"
# magic, request count, layer count, hidden size, dtype code, rows of all requests, data length
HEADER = struct.Struct("<4sHHIBIQ")
LAYER = struct.Struct("<H")
# first position, row count, key length (the key's bytes follow)
SLOT = struct.Struct("<IIH")


def encode_frame_header(
    slots: Sequence[tuple[str, int, int]],
    layers: Sequence[int],
    hidden: int,
    dtype: str,
    n_bytes: int,
) -> bytes:
    """Everything before the rows: `slots` are (capture key, first position, row count)."""
    rows = sum(n for _, _, n in slots)
    parts = [HEADER.pack(MAGIC, len(slots), len(layers), hidden, DTYPES[dtype].code, rows, n_bytes)]
    parts += [LAYER.pack(layer) for layer in layers]
    for key, position, n_rows in slots:
        raw = key.encode()
        parts += [SLOT.pack(position, n_rows, len(raw)), raw]
    return b"".join(parts)
