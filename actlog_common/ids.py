"""Record ids: 32 lowercase hex chars, sortable by creation time.

Layout (128 bits): a 48-bit Unix timestamp in milliseconds, then 80 random bits.
Ids made in one process are strictly increasing even within one millisecond
(the random part is incremented instead of redrawn, as ULID's monotonic mode does),
so sorting ids sorts records by creation time.
"""

from __future__ import annotations

import re
import secrets
import threading
import time

RECORD_ID_HEX_LEN = 32
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
_RECORD_ID_RE = re.compile(r"[0-9a-f]{32}")

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def new_record_id() -> str:
    """A new record id, greater than every id this process made before."""
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _last_random = now_ms, secrets.randbits(_RANDOM_BITS)
        elif _last_random < _RANDOM_MAX:
            _last_random += 1
        else:  # 2**80 ids in one millisecond: borrow the next millisecond
            _last_ms, _last_random = _last_ms + 1, secrets.randbits(_RANDOM_BITS)
        return f"{(_last_ms << _RANDOM_BITS) | _last_random:032x}"


def is_record_id(value: str) -> bool:
    """Whether `value` is a well-formed record id (32 lowercase hex chars)."""
    return isinstance(value, str) and _RECORD_ID_RE.fullmatch(value) is not None


def record_id_timestamp_ms(record_id: str) -> int:
    """The creation time (Unix ms) encoded in a record id."""
    if not is_record_id(record_id):
        raise ValueError(f"malformed record id {record_id!r}: expected 32 lowercase hex chars")
    return int(record_id, 16) >> _RANDOM_BITS
