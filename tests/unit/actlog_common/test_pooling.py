"""The rows each pooling reads, at the edges of the positions convention."""

from __future__ import annotations

import numpy as np
import pytest

from actlog_common.pooling import POOLINGS, PoolingError, pool, pooled_rows, pooling_value


def rows(name: str, prompt_length: int, num_positions: int, position: int = 0):
    span = pooled_rows(POOLINGS[name], prompt_length, num_positions, position, "r1")
    return span.start, span.end, span.mean


def test_each_pooling_reads_the_rows_its_definition_names() -> None:
    # 5 prompt tokens, 4 generated: rows 0..7 (the last generated token was never fed back).
    assert rows("last_prompt", 5, 8) == (4, 5, False)
    assert rows("mean_prompt", 5, 8) == (0, 5, True)
    assert rows("mean_response", 5, 8) == (4, 8, True)
    assert rows("last_response", 5, 8) == (7, 8, False)
    assert rows("position", 5, 8, 0) == (0, 1, False)
    assert rows("position", 5, 8, -1) == (7, 8, False)
    assert rows("position", 5, 8, -8) == (0, 1, False)


def test_one_generated_token_makes_response_and_last_prompt_the_same_row() -> None:
    assert rows("mean_response", 5, 5) == rows("last_response", 5, 5)[:2] + (True,)
    assert rows("last_response", 5, 5)[:2] == rows("last_prompt", 5, 5)[:2] == (4, 5)


@pytest.mark.parametrize(
    "name,prompt_length,num_positions,position,message",
    [("last_prompt", 0, 4, 0, "no row for the last prompt token"),
     ("last_prompt", 6, 5, 0, "no row for the last prompt token"),
     ("mean_prompt", 6, 5, 0, "does not hold its prompt's rows"),
     ("last_response", 3, 0, 0, "no response rows"),
     ("position", 3, 8, 8, "position 8 is outside record r1, which has 8 positions"),
     ("position", 3, 8, -9, "position -9 is outside")],
)  # fmt: skip
def test_a_pooling_a_record_cannot_give_names_the_record(
    name: str, prompt_length: int, num_positions: int, position: int, message: str
) -> None:
    with pytest.raises(PoolingError, match=message):
        rows(name, prompt_length, num_positions, position)


def test_unknown_poolings_are_refused_with_the_known_ones() -> None:
    with pytest.raises(PoolingError, match="unknown pooling 'max': expected one of last_prompt"):
        pooling_value("max")
    with pytest.raises(PoolingError, match="unknown pooling 0"):
        pooled_rows(0, 3, 5)


def test_a_mean_is_accumulated_in_float64_and_rounded_once() -> None:
    values = np.array([[1e8, 1.0], [1.0, 1.0], [-1e8, 1.0]], dtype=np.float32)
    assert pool(values, mean=True).tolist() == [np.float32(1 / 3), 1.0]  # float32 sums lose the 1
    assert pool(values, mean=True).dtype == np.float32
    assert pool(values[1:2], mean=False).tolist() == [1.0, 1.0]
