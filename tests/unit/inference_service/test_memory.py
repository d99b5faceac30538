"""The KV cache on CPU is sized from what the engine needs, within a ceiling, and a start that
cannot fit says so in one line with the figures and the setting to change."""

from __future__ import annotations

import pytest

from inference_service.memory import (
    GIB,
    KV_CACHE_CEILING_BYTES,
    MIB,
    InsufficientMemory,
    check_fits,
    kv_bytes_per_token,
    plan_kv_cache,
)

# SmolLM2-135M: 30 layers, 3 KV heads of 64, bf16.
SMOLLM2_TOKEN = kv_bytes_per_token(30, 3, 64, 2)


def test_bytes_per_token_count_keys_and_values_of_every_layer():
    assert SMOLLM2_TOKEN == 2 * 30 * 3 * 64 * 2 == 23_040


def test_a_small_engine_gets_what_its_limits_need():
    plan = plan_kv_cache(
        SMOLLM2_TOKEN, max_model_len=2048, max_num_seqs=8, available_bytes=20 * GIB
    )
    assert plan.kv_cache_bytes == -(-SMOLLM2_TOKEN * 2048 * 8 // MIB) * MIB  # 360 MiB
    assert plan.tokens >= 2048 * 8


def test_the_defaults_are_capped_at_the_ceiling():
    plan = plan_kv_cache(SMOLLM2_TOKEN, 8192, 256, available_bytes=20 * GIB)
    assert plan.kv_cache_bytes == KV_CACHE_CEILING_BYTES
    assert "KV_CACHE_MEMORY_BYTES" in plan.describe()


def test_little_free_memory_lowers_the_ceiling():
    plan = plan_kv_cache(SMOLLM2_TOKEN, 8192, 256, available_bytes=4 * GIB)
    assert plan.kv_cache_bytes == GIB  # a quarter of what is free


def test_never_less_than_one_whole_sequence():
    # vLLM refuses a cache that cannot hold one max-length sequence.
    big = kv_bytes_per_token(32, 8, 128, 2)  # an 8B model: 128 KiB per token
    plan = plan_kv_cache(big, max_model_len=131_072, max_num_seqs=256, available_bytes=64 * GIB)
    assert plan.kv_cache_bytes >= big * 131_072
    assert plan.kv_cache_bytes > KV_CACHE_CEILING_BYTES


def test_enough_memory_passes():
    check_fits(KV_CACHE_CEILING_BYTES, 300 * MIB, available_bytes=8 * GIB)


def test_too_little_memory_is_one_line_with_figures_and_settings():
    with pytest.raises(InsufficientMemory) as info:
        check_fits(16 * GIB, 2 * GIB, available_bytes=6 * GIB)
    message = str(info.value)
    assert "\n" not in message
    assert "wants 19.00 GiB" in message and "6.00 GiB is free" in message
    assert "KV_CACHE_MEMORY_BYTES" in message and "MAX_MODEL_LEN" in message
