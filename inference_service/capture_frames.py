"""Wire format of captured rows between vLLM's worker process and the inference service.

The worker sends frames over a Unix socket: a fixed header, the capture key, then the raw row
bytes. Kept dependency-free so both sides (worker: torch; service: asyncio) share it.
"""

from __future__ import annotations

import struct

MAGIC = b"ALC1"
# magic, key length, layer, first position, row count, hidden size, dtype code, data length
HEADER = struct.Struct("<4sHHIIIBQ")

DTYPE_CODES = {"float32": 1, "bfloat16": 2, "float16": 3}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
DTYPE_SIZES = {"float32": 4, "bfloat16": 2, "float16": 2}


def encode_header(
    key: str, layer: int, pos_start: int, n_rows: int, hidden: int, dtype: str, n_bytes: int
) -> bytes:
    raw_key = key.encode()
    return (
        HEADER.pack(
            MAGIC, len(raw_key), layer, pos_start, n_rows, hidden, DTYPE_CODES[dtype], n_bytes
        )
        + raw_key
    )
