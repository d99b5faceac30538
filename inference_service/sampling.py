"""A request's sampling options as vLLM's SamplingParams, checked, with its capture options
riding along in `extra_args` for the worker (capture/worker.py) to read."""

from __future__ import annotations

from typing import Any

from inference_service.capture import worker as capture_worker
from inference_service.errors import InvalidRequest
from inference_service.types import Sampling

MAX_N = 16


def sampling_params(
    s: Sampling,
    *,
    capture_key: str | None,
    layers: list[int],
    sink: str,
    cpu_chunked_prefill: bool,
    dtype: str = "",
    extra_stop: str = "",
) -> Any:
    """vLLM's SamplingParams for `s`; with a capture key, the worker captures `layers` of
    every choice, converted to `dtype` ("" = as computed), and streams them to the
    collector's socket `sink`. InvalidRequest when vLLM
    (or this engine) cannot serve the options."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    if s.max_tokens < 1:
        raise InvalidRequest(
            f"max_tokens must be at least 1, got {s.max_tokens}", param="max_tokens"
        )
    if not 1 <= s.n <= MAX_N:
        raise InvalidRequest(f"n must be between 1 and {MAX_N}, got {s.n}", param="n")
    seed = s.seed
    if seed is not None and cpu_chunked_prefill:
        # vLLM's CPU backend crashes the engine when a seeded request's prompt is split by
        # chunked prefill ("CPU Generator does not use offset").
        if s.temperature == 0:
            seed = None  # greedy: the seed changes nothing
        else:
            raise InvalidRequest(
                "seed is not supported on this CPU engine with chunked prefill enabled"
            )
    kwargs: dict[str, Any] = {
        "n": s.n,
        "max_tokens": s.max_tokens,
        "stop": [*s.stop, *([extra_stop] if extra_stop else [])] or None,
        "seed": seed,
        "ignore_eos": s.ignore_eos,
        "output_kind": RequestOutputKind.CUMULATIVE,
    }
    for name in (
        "temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty",
        "logprobs", "prompt_logprobs",
    ):  # fmt: skip
        value = getattr(s, name)
        if value is not None:
            kwargs[name] = value
    if capture_key is not None:
        kwargs["extra_args"] = {
            capture_worker.KEY: capture_key,
            capture_worker.LAYERS: layers,
            capture_worker.SINK: sink,
            capture_worker.N: s.n,
            capture_worker.DTYPE: dtype,
        }
        # Rows served from the prefix cache are never computed, so never captured.
        kwargs["skip_reading_prefix_cache"] = True
    try:
        return SamplingParams(**kwargs)
    except Exception as exc:  # vLLM's validation errors do not all derive from ValueError
        raise InvalidRequest(str(exc)) from exc
