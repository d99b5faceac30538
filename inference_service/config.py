"""Inference service settings: environment variables, or CLI flags of the same names."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from actlog_common.defaults import (
    CAPTURE_SPOOL_DIR,
    INFERENCE_METRICS_PORT,
    INFERENCE_PORT,
    STORAGE_ADDR,
)
from actlog_common.grpc_security import GrpcSecurityFields


class InferenceSettings(BaseSettings, GrpcSecurityFields):
    model_config = SettingsConfigDict(
        cli_kebab_case=True, cli_implicit_flags=True, protected_namespaces=()
    )

    inference_host: str = Field("127.0.0.1", description="address the gRPC server binds")
    inference_port: int = Field(INFERENCE_PORT, description="gRPC port")
    inference_metrics_port: int = Field(
        INFERENCE_METRICS_PORT,
        description="port of Prometheus metrics (/metrics, on INFERENCE_HOST); 0 = off",
    )
    model: str = Field(
        "default",
        description="`default` (offline SmolLM2-135M-Instruct), "
        "a local Hugging Face directory or a hub id",
    )
    served_model_name: str = Field("", description="name clients use; defaults to the model's")
    model_cache_dir: str = Field("", description="where the default model is prepared")
    dtype: str = Field(
        "auto",
        description="the dtype the engine computes in: auto, bfloat16, float16 or float32. "
        "auto = on CPU float32, or bfloat16 where the CPU computes it natively (AVX512_BF16, "
        "AMX-BF16, BF16); on CUDA the checkpoint's",
    )
    capture_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="the dtype captured rows are stored in, converted in the worker before "
        "they leave it (float16 or bfloat16 halve a float32 engine's records); auto = the "
        "compute dtype. A request's capture_dtype wins",
    )
    max_model_len: int = Field(0, description="0 = the model's own limit")
    max_num_seqs: int = Field(0, description="sequences in one batch; 0 = vLLM's default")
    max_num_batched_tokens: int = Field(
        0, description="tokens in one engine step; 0 = vLLM's default"
    )
    gpu_memory_utilization: float = Field(
        0.0, description="vLLM's share of memory to reserve; 0 = vLLM's default"
    )
    enable_chunked_prefill: Literal["auto", "true", "false"] = Field(
        "auto",
        description="auto = off on CPU, where a per-request seed on a split prompt kills the "
        "engine; on elsewhere",
    )
    enable_prefix_caching: bool = Field(
        True,
        description="vLLM's prefix cache; captured requests never read it, so every row is "
        "computed",
    )
    max_prompt_tokens: int = Field(0, description="longest prompt accepted; 0 = the model's")
    storage_addr: str = Field(STORAGE_ADDR, description="the storage service records go to")
    enforce_eager: Literal["auto", "true", "false"] = Field(
        "auto",
        description="true = run vLLM uncompiled (no torch.compile, no CUDA graphs): capture by "
        "forward hooks, any layer may be asked for; false = compile, capture inside the graph "
        "(CAPTURE_LAYERS_AVAILABLE); auto = eager on CPU, where compiling gains a few percent "
        "for minutes of start-up, compiled with CUDA graphs on CUDA",
    )
    capture_layers_available: str = Field(
        "last",
        description="layers a compiled engine can capture, fixed when it starts: last, all, "
        "recommended or comma-separated indices (ignored with ENFORCE_EAGER)",
    )
    capture_default: bool = Field(True, description="capture requests that do not say")
    trim_output_at: str = Field(
        "",
        description="cut every response, as returned and as stored, where this text first "
        "appears (it is left out), as a stop string added to every request: the original "
        "server's --trim-output-at",
    )
    capture_default_layers: str = Field(
        "last", description="last, all, recommended or comma-separated indices"
    )
    capture_timeout_s: float = Field(
        60.0, description="how long a finished request waits for its rows from the worker"
    )
    capture_max_bytes: int = Field(
        2 << 30, description="per-request cap on captured bytes (all layers, all choices)"
    )
    capture_spool_dir: str = Field(
        CAPTURE_SPOOL_DIR, description="on-disk spool of captures not yet stored"
    )
    capture_spool_max_bytes: int = Field(
        0,
        description="bytes the spool may hold (finished records plus the worst case of "
        "captures in flight); beyond, captured requests get 503. 0 = 90% of the free space "
        "of its disk at start",
    )
    capture_spool_fsync: bool = Field(
        True,
        description="flush each record's files to disk before its response names it, so a "
        "crash of the machine loses no promised record; false trusts the page cache",
    )
    capture_max_attempts: int = Field(
        5,
        ge=1,
        description="sends of a record storage fails (other than being down or out of disk) "
        "before it moves to the spool's dead-letter area",
    )
    capture_queue_size: int = Field(1024, description="finished captures queued in memory")
    kv_cache_memory_bytes: int = Field(
        0,
        description="KV cache size; 0 = on CPU sized from MAX_MODEL_LEN x MAX_NUM_SEQS "
        "(at most 2 GiB), on GPU vLLM's share of GPU memory",
    )
    capture_socket_dir: str = Field("", description="directory for the worker's capture socket")
    grpc_max_message_bytes: int = Field(
        64 * 1024 * 1024, description="largest gRPC message sent or received"
    )
    log_level: str = Field("INFO", description="Python logging level")
