"""vLLM's engine arguments from the service's settings: the defaults chosen for the machine
(machine.py), the capture path (capture/path.py), and on a CPU host the KV cache sized to what
the engine needs (memory.py), with a one-line failure when the engine cannot fit."""

from __future__ import annotations

import copy
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any

from inference_service import memory
from inference_service.capture.path import CapturePath, choose_capture_path
from inference_service.config import InferenceSettings
from inference_service.machine import Choice, Machine, choose_dtype, choose_enforce_eager

logger = logging.getLogger(__name__)

# Named, not imported: importing it patches vLLM's model runner, which only the worker needs.
WORKER_EXTENSION = "inference_service.capture.worker.ActivationCaptureExtension"


@dataclass(frozen=True)
class EnginePlan:
    args: Any  # vLLM's AsyncEngineArgs
    # Bytes of KV cache the engine is given (0: vLLM's own sizing, e.g. on GPU).
    kv_cache_bytes: int
    path: CapturePath
    # The compute dtype asked of vLLM ("auto" on CUDA: the checkpoint's) and why.
    dtype: Choice


def engine_args(
    settings: InferenceSettings,
    model_path: str,
    served: str,
    *,
    chunked_prefill: bool,
    is_cpu: bool,
    machine: Machine | None = None,
) -> EnginePlan:
    """vLLM's engine arguments for the model on this machine (the defaults of machine.py
    where the settings say `auto`), with the KV cache and capture path they come to."""
    from transformers import AutoConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    from inference_service.capture.compiled import CODE_VERSION

    s = settings
    machine = machine or Machine.detect("cpu" if is_cpu else "cuda")
    hf_config = AutoConfig.from_pretrained(model_path)
    num_layers = int(getattr(hf_config, "num_hidden_layers", 0) or 0)
    dtype = choose_dtype(s.dtype, machine)
    path = choose_capture_path(
        eager=choose_enforce_eager(s.enforce_eager, machine),
        available_spec=s.capture_layers_available,
        default_spec=s.capture_default_layers,
        architectures=list(getattr(hf_config, "architectures", None) or []),
        num_layers=num_layers,
        cannot_compile="" if not is_cpu or cpu_compiler() else NO_COMPILER,
    )
    kwargs: dict[str, Any] = {
        "model": model_path,
        "served_model_name": served,
        "dtype": dtype.value,
        # Hooks on inner layers never fire inside compiled code: an engine that cannot
        # capture inside the graph runs eagerly.
        "enforce_eager": not path.compiled,
        "worker_extension_cls": WORKER_EXTENSION,
        "enable_chunked_prefill": chunked_prefill,
        "enable_prefix_caching": s.enable_prefix_caching,
        # Also part of vLLM's compile cache key: graphs traced for other capture layers
        # (or none) are never loaded into this engine.
        "additional_config": path.additional_config(num_layers, CODE_VERSION),
    }
    optional = {
        "max_model_len": s.max_model_len,
        "max_num_seqs": s.max_num_seqs,
        "max_num_batched_tokens": s.max_num_batched_tokens,
        "gpu_memory_utilization": s.gpu_memory_utilization,
        "kv_cache_memory_bytes": s.kv_cache_memory_bytes,
    }
    kwargs.update({k: v for k, v in optional.items() if v})
    args = AsyncEngineArgs(**kwargs)
    if not chunked_prefill and not s.max_num_batched_tokens:
        # Without chunked prefill a whole prompt must fit one step.
        args.max_num_batched_tokens = max(s.max_model_len or 8192, 2048)
    kv_cache_bytes = s.kv_cache_memory_bytes
    if is_cpu:
        kv_cache_bytes = _size_cpu_memory(s, args, model_path)
    return EnginePlan(args, kv_cache_bytes, path, dtype)


NO_COMPILER = (
    "no C++ compiler (g++, c++ or clang++, or $CXX) for torch.compile on this CPU host: "
    "install one to capture inside the compiled graph"
)


def cpu_compiler() -> str | None:
    """The C++ compiler torch inductor would build CPU kernels with, if there is one."""
    for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++"):
        if name and (found := shutil.which(name)):
            return found
    return None


def _size_cpu_memory(s: InferenceSettings, args: Any, model_path: str) -> int:
    """Give the KV cache what the engine needs unless a setting says otherwise, and fail at
    once, in one line, when the engine cannot fit; the KV cache bytes given."""
    if s.gpu_memory_utilization or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return s.kv_cache_memory_bytes  # vLLM's own reservation and checks apply
    probe = copy.deepcopy(args)
    config = probe.create_engine_config()
    model = config.model_config
    dtype_size = model.dtype.itemsize
    cache_dtype = str(config.cache_config.cache_dtype)
    cache_size = dtype_size if cache_dtype == "auto" else (1 if "fp8" in cache_dtype else 2)
    per_token = memory.kv_bytes_per_token(
        model.get_num_layers(config.parallel_config),
        model.get_num_kv_heads(config.parallel_config),
        model.get_head_size(),
        cache_size,
    )
    available = memory.cpu_available_bytes()
    if s.kv_cache_memory_bytes:
        kv_bytes = s.kv_cache_memory_bytes
        logger.info("KV cache %.2f GiB (KV_CACHE_MEMORY_BYTES)", kv_bytes / memory.GIB)
    else:
        plan = memory.plan_kv_cache(
            per_token,
            model.max_model_len,
            config.scheduler_config.max_num_seqs,
            available,
        )
        kv_bytes = args.kv_cache_memory_bytes = plan.kv_cache_bytes
        logger.info("%s", plan.describe())
    stored = getattr(model.hf_config, "dtype", None) or getattr(
        model.hf_config, "torch_dtype", None
    )
    stored_size = getattr(stored, "itemsize", None) or (4 if "32" in str(stored) else 2)
    weights = memory.weights_bytes_on_disk(model_path, dtype_size, stored_size)
    memory.check_fits(kv_bytes, weights, available)
    return kv_bytes
