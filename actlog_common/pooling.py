"""Poolings: which rows of a record make its one feature vector per layer.

The positions convention (README, storage.proto): a record of prompt length P has
N = num_positions rows per layer; row p is the residual stream at token p, the state that
predicted token p+1. So rows [0, P) are the prompt's tokens, row P-1 predicted the first
response token, and rows [P-1, N) are the states that predicted each response token
(N - P + 1 of them: every generated token).

| pooling         | rows        | vector                                              |
|-----------------|-------------|-----------------------------------------------------|
| `last_prompt`   | P-1         | the row that predicted the first response token     |
| `mean_prompt`   | [0, P)      | mean over the prompt's tokens                       |
| `mean_response` | [P-1, N)    | mean over the states that predicted response tokens |
| `last_response` | N-1         | the state that predicted the last response token    |
| `position`      | k, or N+k   | one given row; negative counts from the end         |

Vectors are float32. A mean is accumulated in float64 over the rows converted to float32
(exact for bfloat16 and float16) and rounded once to float32:
``rows.astype(np.float32).mean(axis=0, dtype=np.float64).astype(np.float32)``.
Storage computes them (Features RPC); this module is the one place the rule is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actlog_common.v1 import storage_pb2

POOLINGS: dict[str, int] = {
    "last_prompt": storage_pb2.POOLING_LAST_PROMPT,
    "mean_prompt": storage_pb2.POOLING_MEAN_PROMPT,
    "mean_response": storage_pb2.POOLING_MEAN_RESPONSE,
    "last_response": storage_pb2.POOLING_LAST_RESPONSE,
    "position": storage_pb2.POOLING_POSITION,
}
# The rows each pooling reads, in words (for reports and dataset metadata).
POOLING_ROWS: dict[str, str] = {
    "last_prompt": "row prompt_length-1 (predicted the first response token)",
    "mean_prompt": "mean of rows [0, prompt_length)",
    "mean_response": "mean of rows [prompt_length-1, num_positions) (predicted each response "
    "token)",
    "last_response": "row num_positions-1 (predicted the last response token)",
    "position": "row `position`, negative from the end",
}
POOLING_NAMES: dict[int, str] = {value: name for name, value in POOLINGS.items()}


class PoolingError(ValueError):
    """A pooling that does not apply to a record (or is not a pooling at all)."""


def pooling_value(name: str) -> int:
    """The Pooling enum value of a pooling name; PoolingError when unknown."""
    try:
        return POOLINGS[name]
    except KeyError:
        raise PoolingError(
            f"unknown pooling {name!r}: expected one of {', '.join(POOLINGS)}"
        ) from None


@dataclass(frozen=True)
class PooledRows:
    """Rows [start, end) of one record that a pooling reads; `mean` or a single row."""

    start: int
    end: int
    mean: bool


def pooled_rows(
    pooling: int, prompt_length: int, num_positions: int, position: int = 0, record_id: str = ""
) -> PooledRows:
    """The rows `pooling` reads of a record of `prompt_length` prompt tokens and
    `num_positions` rows; PoolingError when the record has none of them."""
    what = f"record {record_id}" if record_id else "the record"
    p, n = prompt_length, num_positions
    if pooling in (storage_pb2.POOLING_LAST_PROMPT, storage_pb2.POOLING_MEAN_RESPONSE):
        if not 0 < p <= n:
            raise PoolingError(
                f"{what} has no row for the last prompt token (prompt length {p}, {n} positions)"
            )
        if pooling == storage_pb2.POOLING_LAST_PROMPT:
            return PooledRows(p - 1, p, mean=False)
        return PooledRows(p - 1, n, mean=True)
    if pooling == storage_pb2.POOLING_MEAN_PROMPT:
        if not 0 < p <= n:
            raise PoolingError(f"{what} does not hold its prompt's rows ({p} tokens, {n} rows)")
        return PooledRows(0, p, mean=True)
    if pooling == storage_pb2.POOLING_LAST_RESPONSE:
        if n == 0 or n < p:
            raise PoolingError(f"{what} has no response rows ({n} positions, prompt length {p})")
        return PooledRows(n - 1, n, mean=False)
    if pooling == storage_pb2.POOLING_POSITION:
        row = position if position >= 0 else n + position
        if not 0 <= row < n:
            raise PoolingError(f"position {position} is outside {what}, which has {n} positions")
        return PooledRows(row, row + 1, mean=False)
    raise PoolingError(f"unknown pooling {pooling}: expected one of {', '.join(POOLINGS)}")


def pool(rows: np.ndarray, mean: bool) -> np.ndarray:
    """The float32 vector of `rows` (rows x hidden, float32): their mean, or the one row."""
    if not mean:
        return rows[0]
    return rows.mean(axis=0, dtype=np.float64).astype(np.float32)
