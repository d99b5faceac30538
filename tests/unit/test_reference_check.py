"""The activation comparison fails on misaligned rows: the exactness tests can fail."""

from __future__ import annotations

import numpy as np

from tests.reference import row_mismatches


def rows(seed: int, n: int = 12, hidden: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, hidden)).astype(np.float32)


def test_identical_rows_pass_in_both_dtypes():
    ref = rows(0)
    assert row_mismatches(ref.copy(), ref, "float32") == []
    assert row_mismatches(ref.copy(), ref, "bfloat16") == []


def test_small_numeric_noise_passes_float32_tolerance():
    ref = rows(0)
    noisy = ref * (1 + 1e-5)
    assert row_mismatches(noisy, ref, "float32") == []


def test_shift_by_one_position_fails():
    ref = rows(1)
    assert len(row_mismatches(np.roll(ref, 1, axis=0), ref, "float32")) == len(ref)
    assert row_mismatches(np.roll(ref, 1, axis=0), ref, "bfloat16")


def test_rows_of_another_request_fail():
    assert row_mismatches(rows(2), rows(3), "bfloat16")


def test_wrong_row_count_fails():
    ref = rows(4)
    assert row_mismatches(ref[:-1], ref, "float32")
