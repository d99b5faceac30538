"""Wire format of captured rows between vLLM's worker process and the inference service.

The worker sends frames over a Unix socket: a fixed header, the capture key, then the raw row
bytes. Kept light (no torch, no asyncio) so both sides share it; dtype codes are the table's.
"""

from __future__ import annotations

import struct

from actlog_common.dtypes import DTYPES

MAGIC = b"ALC1"
# magic, key length, layer, first position, row count, hidden size, dtype code, data length
HEADER = struct.Struct("<4sHHIIIBQ")


def encode_header(
    key: str, layer: int, pos_start: int, n_rows: int, hidden: int, dtype: str, n_bytes: int
) -> bytes:
    raw_key = key.encode()
    return (
        HEADER.pack(
            MAGIC, len(raw_key), layer, pos_start, n_rows, hidden, DTYPES[dtype].code, n_bytes
        )
        + raw_key
    )
