"""A vLLM AsyncLLM engine with per-request hidden-state capture.

The engine core runs in its own process; capture hooks live in its worker
(capture_worker.py) and stream rows back over a Unix socket to the CaptureCollector, which files
them in the on-disk spool. When a request finishes, its record header is written next to the
rows and the sink sends it to storage in the background: the caller gets the result without
waiting for any of that.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from vllm.exceptions import VLLMValidationError

from actlog_common.default_model import DEFAULT_MODEL_NAME, resolve_model
from actlog_common.dtypes import DTYPES
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.hashing import prompt_hash
from actlog_common.ids import new_record_id
from inference_service import capture_worker, memory
from inference_service.capture import CaptureCollector
from inference_service.config import InferenceSettings
from inference_service.errors import (
    CaptureIncomplete,
    EngineNotReady,
    InvalidRequest,
    PromptTooLong,
)
from inference_service.layers import parse_layer_spec, recommended_layers, resolve_layers
from inference_service.logprobs import token_logprobs
from inference_service.sink import RecordSink
from inference_service.spool import Spool, SpoolFull
from inference_service.types import GenerationRequest, GenerationResult, TokenDelta

logger = logging.getLogger(__name__)

WORKER_EXTENSION = f"{capture_worker.__name__}.ActivationCaptureExtension"
MAX_N = 16


@dataclass(frozen=True)
class ModelDescription:
    model: str
    num_layers: int
    hidden_size: int
    dtype: str
    max_model_len: int
    default_layers: tuple[int, ...]
    recommended_layers: tuple[int, ...]
    kv_cache_bytes: int = 0


@dataclass
class _Choice:
    """Per-choice progress of one request."""

    key: str
    record_id: str
    token_ids: tuple[int, ...] = ()
    text: str = ""
    finish_reason: str | None = None
    logprobs: Any = None


class CaptureEngine:
    def __init__(self, settings: InferenceSettings) -> None:
        self._settings = settings
        self.spool = Spool(Path(settings.capture_spool_dir), settings.capture_spool_max_bytes)
        self.sink = RecordSink(
            self.spool,
            settings.storage_addr,
            settings.grpc_max_message_bytes,
            settings.capture_queue_size,
            settings.capture_max_attempts,
            GrpcSecurity.of(settings),
        )
        self.collector = CaptureCollector(self.spool, settings.capture_socket_dir or None)
        self._background: set[asyncio.Task[None]] = set()
        self._llm: Any = None
        self._tokenizer: Any = None
        self.info: ModelDescription | None = None
        self._chunked_prefill = False
        self._is_cpu = False
        # Bytes of KV cache the engine was given (0: vLLM's own sizing, e.g. on GPU).
        self.kv_cache_bytes = settings.kv_cache_memory_bytes

    def engine_args(self, model_path: str, served: str) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        s = self._settings
        kwargs: dict[str, Any] = {
            "model": model_path,
            "served_model_name": served,
            "dtype": s.dtype,
            # Hooks on inner layers never fire inside torch.compile'd / graph-captured regions.
            "enforce_eager": True,
            "worker_extension_cls": WORKER_EXTENSION,
            "enable_chunked_prefill": self._chunked_prefill,
            "enable_prefix_caching": s.enable_prefix_caching,
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
        if not self._chunked_prefill and not s.max_num_batched_tokens:
            # Without chunked prefill a whole prompt must fit one step.
            args.max_num_batched_tokens = max(s.max_model_len or 8192, 2048)
        if self._is_cpu:
            self._size_cpu_memory(args, model_path)
        return args

    def _size_cpu_memory(self, args: Any, model_path: str) -> None:
        """Give the KV cache what the engine needs (memory.py) unless a setting says
        otherwise, and fail at once, in one line, when the engine cannot fit."""
        s = self._settings
        if s.gpu_memory_utilization or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            return  # vLLM's own reservation and checks apply
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
        self.kv_cache_bytes = kv_bytes

    async def start(self) -> ModelDescription:
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self._settings
        cache = Path(s.model_cache_dir) if s.model_cache_dir else None
        # Everything slow here runs in threads, so the event loop answers health checks
        # and status (NOT_SERVING, "loading") while the model is prepared and loaded.
        model_path = await asyncio.to_thread(resolve_model, s.model, cache)
        served = s.served_model_name or (
            DEFAULT_MODEL_NAME if model_path != s.model else s.model.rstrip("/").split("/")[-1]
        )
        self._is_cpu = current_platform.is_cpu()
        self._chunked_prefill = (
            not self._is_cpu
            if s.enable_chunked_prefill == "auto"
            else s.enable_chunked_prefill == "true"
        )
        await self.sink.start()
        await self.collector.start()
        args = await asyncio.to_thread(self.engine_args, model_path, served)
        logger.info(
            "starting vLLM engine for %s (chunked prefill %s)", model_path, self._chunked_prefill
        )
        self._llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        [shape, *_] = await self._llm.collective_rpc("actlog_install")
        self._tokenizer = self._llm.get_tokenizer()
        num_layers = int(shape["num_layers"])
        default_layers = resolve_layers(*parse_layer_spec(s.capture_default_layers), num_layers)
        self.info = ModelDescription(
            model=served,
            num_layers=num_layers,
            hidden_size=int(shape["hidden_size"]),
            dtype=str(shape["dtype"]),
            max_model_len=int(self._llm.model_config.max_model_len),
            default_layers=tuple(default_layers),
            recommended_layers=tuple(recommended_layers(num_layers)),
            kv_cache_bytes=self.kv_cache_bytes,
        )
        logger.info("engine ready: %s", self.info)
        return self.info

    async def stop(self, grace_s: float) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=grace_s)
        if self._llm is not None:
            self._llm.shutdown()
        await self.collector.close()
        if not await self.sink.drain(grace_s):
            logger.warning(
                "%d captured records stay in the spool %s until the next start",
                len(self.spool.ready()),
                self.spool.root.resolve(),
            )
        await self.sink.stop()

    def require_ready(self) -> ModelDescription:
        if self.info is None:
            raise EngineNotReady("the model is still loading")
        return self.info

    def status(self) -> dict[str, int | float | bool | str]:
        records, size = self.spool.usage()
        return {
            "pending_captures": self.collector.pending,
            "queued_records": self.sink.backlog,
            "spool_records": records,
            "spool_bytes": size,
            "stored_records": self.sink.stored,
            "storage_failures": self.sink.failures,
            "storage_reachable": self.sink.reachable,
            "recomputed_rows": self.collector.recomputed_rows,
            "ready": self.info is not None,
            "oldest_spooled_age_s": self.spool.oldest_age_s(),
            "spool_max_bytes": self.spool.max_bytes,
            "spool_reserved_bytes": self.spool.reserved_bytes,
            "refused_captures": self.spool.refused,
            "dead_letter_records": self.spool.dead_letter_count(),
            "storage_error": self.sink.last_error,
        }

    # -- requests ----------------------------------------------------------------------------

    def _sampling_params(
        self, req: GenerationRequest, capture_key: str | None, layers: list[int]
    ) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = req.sampling
        if s.max_tokens < 1:
            raise InvalidRequest(
                f"max_tokens must be at least 1, got {s.max_tokens}", param="max_tokens"
            )
        if not 1 <= s.n <= MAX_N:
            raise InvalidRequest(f"n must be between 1 and {MAX_N}, got {s.n}", param="n")
        seed = s.seed
        if seed is not None and self._is_cpu and self._chunked_prefill:
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
            "stop": list(s.stop) or None,
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
                capture_worker.SINK: self.collector.path,
                capture_worker.N: s.n,
            }
            # Rows served from the prefix cache are never computed, so never captured.
            kwargs["skip_reading_prefix_cache"] = True
        try:
            return SamplingParams(**kwargs)
        except Exception as exc:  # vLLM's validation errors do not all derive from ValueError
            raise InvalidRequest(str(exc)) from exc

    def _capture_layers(self, req: GenerationRequest) -> list[int] | None:
        info = self.require_ready()
        c = req.capture
        enabled = self._settings.capture_default if c.enabled is None else c.enabled
        if not enabled:
            if c.layers or c.preset:
                raise InvalidRequest(
                    "capture layers were given but capture is off", param="capture_layers"
                )
            return None
        if not c.layers and not c.preset:
            return list(info.default_layers)
        return resolve_layers(c.layers, c.preset, info.num_layers)

    def _prompt(self, req: GenerationRequest) -> tuple[list[int], str]:
        """Token ids and text of the prompt, tokenized here exactly as vLLM would."""
        if req.chat is not None:
            if not req.chat:
                raise InvalidRequest("messages must not be empty")
            messages = [{"role": role, "content": content} for role, content in req.chat]
            try:
                text = self._tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            except Exception as exc:  # the template rejects e.g. unknown role orders
                raise InvalidRequest(f"cannot apply the chat template: {exc}") from exc
            # The template already holds the special tokens it needs.
            return list(self._tokenizer.encode(text, add_special_tokens=False)), text
        if req.prompt is not None:
            if not req.prompt:
                raise InvalidRequest("prompt must not be empty")
            return list(self._tokenizer.encode(req.prompt)), req.prompt
        ids = list(req.prompt_token_ids or ())
        if not ids:
            raise InvalidRequest("prompt_token_ids must not be empty")
        vocab = len(self._tokenizer)
        if any(i >= vocab for i in ids):
            raise InvalidRequest(f"prompt token ids must be below the vocabulary size {vocab}")
        return ids, self._tokenizer.decode(ids)

    def _check_capture_size(
        self, info: ModelDescription, rows: int, req: GenerationRequest, layers: list[int]
    ) -> None:
        need = rows * info.hidden_size * DTYPES[info.dtype].itemsize * len(layers) * req.sampling.n
        cap = self._settings.capture_max_bytes
        prompts = req.capture.request_prompts
        share = cap // prompts
        if need > share:
            of = f"this prompt's share ({share} bytes) of " if prompts > 1 else ""
            raise InvalidRequest(
                f"capturing {len(layers)} layers of up to {rows} positions x {req.sampling.n} "
                f"choices needs up to {need} bytes, above {of}the per-request cap of {cap} "
                f"bytes (CAPTURE_MAX_BYTES{f', shared by {prompts} prompts' if prompts > 1 else ''}"
                "): capture fewer layers or lower max_tokens",
                param="capture_layers",
            )

    async def generate(
        self, req: GenerationRequest
    ) -> AsyncIterator[TokenDelta | GenerationResult]:
        info = self.require_ready()
        # Off the event loop, in threads: a long prompt takes seconds to tokenize, and every
        # other request's tokens flow through this loop. (Encoding with fixed settings only
        # reads the fast tokenizer's state, so threads may share it.)
        prompt_ids, prompt_text = await asyncio.to_thread(self._prompt, req)
        limit = self._settings.max_prompt_tokens or info.max_model_len - 1
        if len(prompt_ids) > limit:
            raise PromptTooLong(
                f"the prompt has {len(prompt_ids)} tokens; the limit is {limit}",
                param="messages" if req.chat is not None else "prompt",
            )
        if req.sampling.fit_context:
            remaining = info.max_model_len - len(prompt_ids)
            req = replace(req, sampling=replace(req.sampling, max_tokens=min(
                req.sampling.max_tokens, remaining
            ), fit_context=False))  # fmt: skip
        if len(prompt_ids) + req.sampling.max_tokens > info.max_model_len:
            raise InvalidRequest(
                f"max_tokens {req.sampling.max_tokens} plus the prompt's {len(prompt_ids)} "
                f"tokens exceed the model's context of {info.max_model_len} tokens",
                param="max_tokens",
            )
        # A capture's worst case: every prompt token and every generated one but the last.
        max_rows = len(prompt_ids) + req.sampling.max_tokens - 1
        layers = self._capture_layers(req)
        request_id = req.request_id or uuid.uuid4().hex
        capture_key = new_record_id() if layers is not None else None
        params = self._sampling_params(req, capture_key, layers or [])
        if layers is not None:
            self._check_capture_size(info, max_rows, req, layers)
        n = req.sampling.n
        choices = [_Choice(key="", record_id="") for _ in range(n)]
        if capture_key is not None:
            try:
                for i, c in enumerate(choices):
                    # The worker suffixes the key with the child index when n > 1.
                    key = capture_key if n == 1 else f"{capture_key}:{i}"
                    record_id = capture_key if i == 0 else new_record_id()
                    self.collector.register(
                        key, record_id, layers or [], info.hidden_size, info.dtype, max_rows
                    )
                    c.key, c.record_id = key, record_id
            except SpoolFull:
                # Refused before generation: no record id is ever promised for it.
                self._discard(choices)
                raise
        final = None
        prompt_lps = None
        lp_k = req.sampling.logprobs
        decode = self._tokenizer.decode
        try:
            async for out in self._llm.generate(
                {"prompt_token_ids": prompt_ids}, params, request_id
            ):
                for output in out.outputs:
                    c = choices[output.index]
                    new_ids = tuple(output.token_ids[len(c.token_ids) :])
                    new_text = output.text[len(c.text) :]
                    if new_ids or new_text:
                        new_logprobs = token_logprobs(
                            output.token_ids, output.logprobs, len(c.token_ids), lp_k, decode
                        )
                        yield TokenDelta(new_ids, new_text, output.index, new_logprobs)
                    c.token_ids, c.text = tuple(output.token_ids), output.text
                    c.finish_reason = output.finish_reason
                    c.logprobs = output.logprobs
                if out.prompt_logprobs is not None:
                    prompt_lps = out.prompt_logprobs
                final = out
        except (ValueError, VLLMValidationError) as exc:
            # vLLM validates prompt length and parameters when the request is added.
            self._discard(choices)
            raise InvalidRequest(str(exc)) from exc
        except BaseException:
            self._discard(choices)
            raise
        assert final is not None
        phash = prompt_hash(prompt_text)
        for index, c in enumerate(choices):
            if c.key:
                header = {
                    "record_id": c.record_id,
                    "request_id": request_id,
                    "prompt": prompt_text,
                    "prompt_hash": phash,
                    "response": c.text,
                    "model": info.model,
                    "token_ids": prompt_ids + list(c.token_ids),
                    "prompt_length": len(prompt_ids),
                    "sampling_params_json": json.dumps(asdict(req.sampling)),
                    "layers": layers,
                    "num_positions": len(prompt_ids) + len(c.token_ids) - 1,
                    "hidden_size": info.hidden_size,
                    "dtype": info.dtype,
                    "row_bytes": info.hidden_size * DTYPES[info.dtype].itemsize,
                    "num_layers": info.num_layers,
                    "finish_reason": str(c.finish_reason or ""),
                    "created_at_ms": int(time.time() * 1000),
                    "choice_index": index,
                }
                task = asyncio.create_task(self._finish_capture(c.key, header))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            yield GenerationResult(
                text=c.text,
                prompt_token_ids=tuple(prompt_ids),
                output_token_ids=c.token_ids,
                finish_reason=str(c.finish_reason or ""),
                prompt_hash=phash,
                record_id=c.record_id,
                layers=tuple(layers or ()),
                model=info.model,
                index=index,
                prompt=prompt_text,
                logprobs=token_logprobs(c.token_ids, c.logprobs, 0, lp_k, decode),
                prompt_logprobs=token_logprobs(
                    prompt_ids, prompt_lps, 0, req.sampling.prompt_logprobs, decode
                ),
            )

    def _discard(self, choices: list[_Choice]) -> None:
        for c in choices:
            if c.key:
                self.collector.discard(c.key)

    async def _finish_capture(self, key: str, header: dict[str, Any]) -> None:
        try:
            writer = await self.collector.wait_complete(
                key, header["num_positions"], self._settings.capture_timeout_s
            )
        except CaptureIncomplete:
            logger.exception("capture of record %s is incomplete; not stored", header["record_id"])
            return
        header["token_strings"] = [self._tokenizer.decode([t]) for t in header["token_ids"]]
        self.spool.finish(writer, header["record_id"], header)
        self.sink.submit(header["record_id"])
