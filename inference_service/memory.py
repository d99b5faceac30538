"""How much memory the engine takes on CPU: the KV cache sized from what the engine needs.

vLLM's CPU backend reserves `gpu_memory_utilization` (default 0.92) of the NUMA node's
memory at start and refuses to start when less is free, so with its defaults a 135M model
fails on any machine where other processes hold a few GiB. Instead, unless
KV_CACHE_MEMORY_BYTES, GPU_MEMORY_UTILIZATION or VLLM_CPU_KVCACHE_SPACE says otherwise, the
cache holds MAX_NUM_SEQS sequences of MAX_MODEL_LEN tokens, capped at a ceiling (and a share
of the free memory), but never less than one whole sequence: vLLM refuses a cache that cannot
hold one. Fewer concurrent full-length sequences than MAX_NUM_SEQS only means vLLM schedules
fewer at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from inference_service.errors import StartupError

MIB = 1 << 20
GIB = 1 << 30
KV_CACHE_CEILING_BYTES = 2 * GIB
# The sized cache takes at most this share of the memory free at start.
KV_CACHE_SHARE_OF_FREE = 0.25
# Room for vLLM's block rounding when the cache is sized to one whole sequence.
ONE_SEQUENCE_MARGIN = 1.1
# The engine process's own needs besides weights and KV cache (torch, vLLM, buffers).
RUNTIME_OVERHEAD_BYTES = 1 * GIB


class InsufficientMemory(StartupError):
    """Not enough free memory for the engine; the message is one line that says what to do."""


@dataclass(frozen=True)
class KVCachePlan:
    kv_cache_bytes: int
    per_token_bytes: int
    max_model_len: int
    max_num_seqs: int
    available_bytes: int

    @property
    def tokens(self) -> int:
        return self.kv_cache_bytes // max(self.per_token_bytes, 1)

    def describe(self) -> str:
        return (
            f"KV cache {self.kv_cache_bytes / GIB:.2f} GiB ({self.tokens} tokens of "
            f"{self.per_token_bytes} bytes), sized for MAX_NUM_SEQS={self.max_num_seqs} x "
            f"MAX_MODEL_LEN={self.max_model_len} with a ceiling of "
            f"{KV_CACHE_CEILING_BYTES / GIB:.0f} GiB or {KV_CACHE_SHARE_OF_FREE:.0%} of the "
            f"{self.available_bytes / GIB:.1f} GiB free (KV_CACHE_MEMORY_BYTES overrides)"
        )


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_size: int, dtype_size: int) -> int:
    """Keys and values of one token in every attention layer."""
    return 2 * num_layers * num_kv_heads * head_size * dtype_size


def plan_kv_cache(
    per_token_bytes: int, max_model_len: int, max_num_seqs: int, available_bytes: int
) -> KVCachePlan:
    one_sequence = per_token_bytes * max_model_len
    wanted = one_sequence * max_num_seqs
    ceiling = min(KV_CACHE_CEILING_BYTES, int(available_bytes * KV_CACHE_SHARE_OF_FREE))
    size = max(min(wanted, ceiling), math.ceil(one_sequence * ONE_SEQUENCE_MARGIN))
    size = -(-size // MIB) * MIB  # whole MiB
    return KVCachePlan(size, per_token_bytes, max_model_len, max_num_seqs, available_bytes)


def check_fits(kv_cache_bytes: int, weights_bytes: int, available_bytes: int) -> None:
    """Raise InsufficientMemory, with the figures and the settings to change, when the
    engine cannot fit in the memory free now."""
    wanted = kv_cache_bytes + weights_bytes + RUNTIME_OVERHEAD_BYTES
    if wanted <= available_bytes:
        return
    raise InsufficientMemory(
        f"not enough memory to start the engine: it wants {wanted / GIB:.2f} GiB "
        f"(KV cache {kv_cache_bytes / GIB:.2f} GiB + weights {weights_bytes / GIB:.2f} GiB + "
        f"runtime {RUNTIME_OVERHEAD_BYTES / GIB:.0f} GiB) and {available_bytes / GIB:.2f} GiB is "
        "free: lower KV_CACHE_MEMORY_BYTES or MAX_MODEL_LEN, or free memory"
    )


def weights_bytes_on_disk(model_path: str, dtype_size: int, stored_dtype_size: int) -> int:
    """Bytes the weights take once loaded: their files' size, scaled to the compute dtype.
    0 for a hub id (nothing local to measure)."""
    directory = Path(model_path)
    if not directory.is_dir():
        return 0
    files = list(directory.glob("*.safetensors")) or list(directory.glob("*.bin"))
    stored = sum(f.stat().st_size for f in files)
    return stored * dtype_size // max(stored_dtype_size, 1)


def cpu_available_bytes() -> int:
    """Memory free for the engine as vLLM's CPU backend reckons it (its NUMA node, within
    any cgroup limit)."""
    from vllm.utils.cpu_resource_utils import get_allowed_cpu_list, get_memory_node_info

    cpus = get_allowed_cpu_list()
    node = cpus[0].numa_node if cpus and cpus[0].numa_node >= 0 else 0
    return int(get_memory_node_info(node).available_memory)
