"""prompt_hash: lowercase hex SHA-256 of the prompt's UTF-8 bytes, exactly as sent."""

from __future__ import annotations

import hashlib
import re

PROMPT_HASH_HEX_LEN = 64
_PROMPT_HASH_RE = re.compile(r"[0-9a-f]{64}")


def prompt_hash(text: str) -> str:
    """The prompt hash of `text` (no normalisation: whitespace and case matter)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_prompt_hash(value: str) -> bool:
    """Whether `value` is a well-formed prompt hash (64 lowercase hex chars)."""
    return isinstance(value, str) and _PROMPT_HASH_RE.fullmatch(value) is not None
