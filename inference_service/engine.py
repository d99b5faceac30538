"""A vLLM AsyncLLM engine with per-request hidden-state capture.

The engine core runs in its own process; capture hooks live in its worker
(capture/worker.py) and stream rows back over a Unix socket to the CaptureCollector, which files
them in the on-disk spool. When a request finishes, its last rows are awaited (they trail the
last token by a step at most), its record header is written next to them and flushed, and only
then is the result, which names the record, returned; the sink sends the record to storage in
the background, so the caller never waits for storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vllm.exceptions import VLLMValidationError

from actlog_common.default_model import DEFAULT_MODEL_NAME, resolve_model
from actlog_common.dtypes import DTYPES
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.ids import new_record_id
from actlog_common.layers import LayerSpec, recommended_layers
from inference_service.capture.collector import CaptureCollector
from inference_service.capture.path import CapturePath
from inference_service.capture.sink import RecordSink
from inference_service.capture.spool import Spool, SpoolFull, SpoolWriter, header_bound
from inference_service.config import InferenceSettings
from inference_service.engine_args import engine_args
from inference_service.errors import (
    CaptureFailed,
    CaptureIncomplete,
    EngineNotReady,
    InvalidRequest,
    PromptTooLong,
)
from inference_service.generation import Generation
from inference_service.layers import resolve_layers
from inference_service.prompt import tokenize_prompt
from inference_service.sampling import sampling_params
from inference_service.types import (
    GenerationRequest,
    GenerationResult,
    ModelDescription,
    TokenDelta,
)

logger = logging.getLogger(__name__)


class CaptureEngine:
    def __init__(self, settings: InferenceSettings) -> None:
        self._settings = settings
        self.spool = Spool(
            Path(settings.capture_spool_dir),
            settings.capture_spool_max_bytes,
            fsync=settings.capture_spool_fsync,
        )
        self.sink = RecordSink(
            self.spool,
            settings.storage_addr,
            settings.grpc_max_message_bytes,
            settings.capture_queue_size,
            settings.capture_max_attempts,
            GrpcSecurity.of(settings),
        )
        self.collector = CaptureCollector(self.spool, settings.capture_socket_dir or None)
        self._llm: Any = None
        self._tokenizer: Any = None
        # The longest token of the vocabulary, in characters: bounds a header's size.
        self._max_token_chars = 0
        self.info: ModelDescription | None = None
        self._chunked_prefill = False
        self._is_cpu = False
        self.capture_path: CapturePath | None = None
        self.dtype_reason = ""
        # What the worker reported when capture was installed (compile mode, graphs).
        self._worker_info: dict[str, Any] = {}
        # Bytes of KV cache the engine was given (0: vLLM's own sizing, e.g. on GPU).
        self.kv_cache_bytes = settings.kv_cache_memory_bytes

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
        plan = await asyncio.to_thread(
            engine_args,
            s,
            model_path,
            served,
            chunked_prefill=self._chunked_prefill,
            is_cpu=self._is_cpu,
        )
        args, self.kv_cache_bytes, path = plan.args, plan.kv_cache_bytes, plan.path
        self.capture_path = path
        self.dtype_reason = plan.dtype.reason
        logger.info(
            "starting vLLM engine for %s (chunked prefill %s); dtype %s (%s); capture path: "
            "%s (%s)%s",
            model_path,
            self._chunked_prefill,
            plan.dtype.value,
            plan.dtype.reason,
            path.name,
            path.reason,
            f", layers {list(path.available)}" if path.compiled else "",
        )
        started = asyncio.get_running_loop().time()
        self._llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        [shape, *_] = await self._llm.collective_rpc("actlog_install")
        self._worker_info = shape
        if shape["path"] != path.name:
            raise RuntimeError(
                f"capture path {path.name} was planned, the worker runs {shape['path']}"
            )
        self._tokenizer = self._llm.get_tokenizer()
        self._max_token_chars = await asyncio.to_thread(_longest_token, self._tokenizer)
        num_layers = int(shape["num_layers"])
        default = LayerSpec.parse(s.capture_default_layers, default="last")
        default_layers = resolve_layers(default.indices, default.preset, num_layers)
        logger.info(
            "vLLM engine up in %.0f s (%s, compile mode %s, %d graph(s) compiled)",
            asyncio.get_running_loop().time() - started,
            path.name,
            shape["compile_mode"],
            shape["compiled_graphs"],
        )
        self.info = ModelDescription(
            model=served,
            num_layers=num_layers,
            hidden_size=int(shape["hidden_size"]),
            dtype=str(shape["dtype"]),
            max_model_len=int(self._llm.model_config.max_model_len),
            default_layers=tuple(default_layers),
            recommended_layers=tuple(recommended_layers(num_layers)),
            kv_cache_bytes=self.kv_cache_bytes,
            capture_path=path.name,
            available_layers=path.available,
            dtype_reason=plan.dtype.reason,
            capture_path_reason=path.reason,
            capture_dtype=(str(shape["dtype"]) if s.capture_dtype == "auto" else s.capture_dtype),
        )
        logger.info("engine ready: %s", self.info)
        return self.info

    async def stop(self, grace_s: float) -> None:
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

    def status(self) -> dict[str, Any]:
        records, size = self.spool.usage()
        path = self.capture_path
        info = self.info
        return {
            "dtype": info.dtype if info else "",
            "dtype_reason": self.dtype_reason,
            "capture_dtype": info.capture_dtype if info else "",
            "capture_path": path.name if path else "",
            "capture_path_reason": path.reason if path else "",
            "available_layers": list(path.available) if path else [],
            "compile_mode": str(self._worker_info.get("compile_mode", "")),
            "compiled_graphs": int(self._worker_info.get("compiled_graphs", 0)),
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

    async def worker_counters(self) -> dict[str, int]:
        """The worker's capture counters (one collective RPC: it waits for the current step)."""
        self.require_ready()
        [counters, *_] = await self._llm.collective_rpc("actlog_counters")
        return counters

    # -- requests: generate and its steps, in the order they run --------------------------

    async def generate(
        self, req: GenerationRequest
    ) -> AsyncIterator[TokenDelta | GenerationResult]:
        """Tokens as vLLM generates them, then one result per choice. A captured choice's
        record is whole in the spool before its result is yielded; storage gets it in the
        background."""
        info = self.require_ready()
        prompt_ids, prompt_text = await self._tokenize(req, info)
        req = self._fit_to_context(req, len(prompt_ids), info)
        run, params = self._plan(req, info, prompt_ids, prompt_text)
        self._open_captures(run)
        async with contextlib.aclosing(self._stream(run, params)) as deltas:
            async for delta in deltas:
                yield delta
        await self._spool_records(run)
        for index in range(len(run.choices)):
            yield run.result(index)

    async def check(self, req: GenerationRequest) -> None:
        """Everything `generate` refuses a request for before generating, without generating:
        so that a batch's prompts are all accepted before any of them runs."""
        info = self.require_ready()
        prompt_ids, prompt_text = await self._tokenize(req, info)
        req = self._fit_to_context(req, len(prompt_ids), info)
        run, _ = self._plan(req, info, prompt_ids, prompt_text)
        if run.capture_key is not None:
            self.collector.check_room(
                len(run.choices),
                run.layers or [],
                info.hidden_size,
                run.capture_dtype,
                run.max_rows,
                self._header_bound(run),
            )

    async def _tokenize(
        self, req: GenerationRequest, info: ModelDescription
    ) -> tuple[list[int], str]:
        """The prompt's token ids and text; PromptTooLong above the prompt limit."""
        # Off the event loop, in threads: a long prompt takes seconds to tokenize, and every
        # other request's tokens flow through this loop. (Encoding with fixed settings only
        # reads the fast tokenizer's state, so threads may share it.)
        prompt_ids, prompt_text = await asyncio.to_thread(tokenize_prompt, self._tokenizer, req)
        limit = self._settings.max_prompt_tokens or info.max_model_len - 1
        if len(prompt_ids) > limit:
            raise PromptTooLong(
                f"the prompt has {len(prompt_ids)} tokens; the limit is {limit}",
                param="messages" if req.chat is not None else "prompt",
            )
        return prompt_ids, prompt_text

    @staticmethod
    def _fit_to_context(
        req: GenerationRequest, prompt_tokens: int, info: ModelDescription
    ) -> GenerationRequest:
        """The request with max_tokens lowered to what the context leaves (fit_context), or
        refused when prompt and max_tokens exceed the context."""
        if req.sampling.fit_context:
            remaining = info.max_model_len - prompt_tokens
            req = replace(req, sampling=replace(req.sampling, max_tokens=min(
                req.sampling.max_tokens, remaining
            ), fit_context=False))  # fmt: skip
        if prompt_tokens + req.sampling.max_tokens > info.max_model_len:
            raise InvalidRequest(
                f"max_tokens {req.sampling.max_tokens} plus the prompt's {prompt_tokens} "
                f"tokens exceed the model's context of {info.max_model_len} tokens",
                param="max_tokens",
            )
        return req

    def _plan(
        self,
        req: GenerationRequest,
        info: ModelDescription,
        prompt_ids: list[int],
        prompt_text: str,
    ) -> tuple[Generation, Any]:
        """What the request captures, and its SamplingParams for vLLM, both checked."""
        layers = self._capture_layers(req, info)
        capture_key = new_record_id() if layers is not None else None
        capture_dtype = req.capture.dtype or info.capture_dtype or info.dtype
        if capture_dtype not in DTYPES:
            raise InvalidRequest(
                f"capture_dtype {capture_dtype!r} is not one of {', '.join(DTYPES)}",
                param="capture_dtype",
            )
        params = sampling_params(
            req.sampling,
            capture_key=capture_key,
            layers=layers or [],
            sink=self.collector.path,
            cpu_chunked_prefill=self._is_cpu and self._chunked_prefill,
            dtype=capture_dtype,
            extra_stop=self._settings.trim_output_at,
        )
        run = Generation(
            req=req,
            info=info,
            request_id=req.request_id or uuid.uuid4().hex,
            prompt_ids=prompt_ids,
            prompt_text=prompt_text,
            layers=layers,
            capture_key=capture_key,
            decode=self._tokenizer.decode,
            capture_dtype=capture_dtype,
        )
        if layers is not None:
            self._check_capture_size(run, layers)
        return run, params

    def _capture_layers(self, req: GenerationRequest, info: ModelDescription) -> list[int] | None:
        """The layers to capture, resolved against the model; None when capture is off."""
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
        layers = resolve_layers(c.layers, c.preset, info.num_layers)
        if self.capture_path is not None and (missing := self.capture_path.unavailable(layers)):
            raise InvalidRequest(self.capture_path.refusal(missing), param="capture_layers")
        return layers

    def _check_capture_size(self, run: Generation, layers: list[int]) -> None:
        """Refuse a capture whose worst case is above its share of CAPTURE_MAX_BYTES."""
        info, rows, req = run.info, run.max_rows, run.req
        itemsize = DTYPES[run.capture_dtype].itemsize
        need = rows * info.hidden_size * itemsize * len(layers) * req.sampling.n
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

    def _open_captures(self, run: Generation) -> None:
        """Expect every choice's rows, each choice its own record with its spool space
        reserved; SpoolFull refuses the request before generation, promising no record."""
        if run.capture_key is None:
            return
        n = len(run.choices)
        info = run.info
        header_bytes = self._header_bound(run)
        try:
            for i, c in enumerate(run.choices):
                # The worker suffixes the key with the child index when n > 1.
                key = run.capture_key if n == 1 else f"{run.capture_key}:{i}"
                record_id = run.capture_key if i == 0 else new_record_id()
                self.collector.register(
                    key,
                    record_id,
                    run.layers or [],
                    info.hidden_size,
                    run.capture_dtype,
                    run.max_rows,
                    header_bytes,
                )
                c.key, c.record_id = key, record_id
        except SpoolFull:
            self._discard(run)
            raise

    async def _stream(self, run: Generation, params: Any) -> AsyncIterator[TokenDelta]:
        """Submit the request to vLLM and yield each choice's new tokens as they come; its
        captures are dropped if it fails or is cancelled."""
        final = None
        captures = [(c.key, c.record_id) for c in run.choices if c.key]
        try:
            async with contextlib.aclosing(
                self._llm.generate({"prompt_token_ids": run.prompt_ids}, params, run.request_id)
            ) as outputs:
                async for out in outputs:
                    # A capture that can no longer be whole fails its request now, and
                    # vLLM stops generating it.
                    for key, record_id in captures:
                        if (error := self.collector.failure(key)) is not None:
                            raise CaptureFailed.writing(record_id, error)
                    for output in out.outputs:
                        delta = run.advance(output)
                        if delta is not None:
                            yield delta
                    if out.prompt_logprobs is not None:
                        run.prompt_logprobs = out.prompt_logprobs
                    final = out
        except (ValueError, VLLMValidationError) as exc:
            # vLLM validates prompt length and parameters when the request is added.
            self._discard(run)
            raise InvalidRequest(str(exc)) from exc
        except BaseException:
            self._discard(run)
            raise
        assert final is not None

    def _discard(self, run: Generation) -> None:
        for c in run.choices:
            if c.key:
                self.collector.discard(c.key)

    def _header_bound(self, run: Generation) -> int:
        return header_bound(
            run.prompt_text + json.dumps(asdict(run.req.sampling)) + run.request_id,
            run.max_rows + 1,
            run.req.sampling.max_tokens,
            self._max_token_chars,
        )

    async def _spool_records(self, run: Generation) -> None:
        """Once every row of every captured choice is in, write each record's header and
        flush it; then, all or none, hand the records to the sink. Until this returns no
        response names a record, so a capture that cannot be spooled whole (rows missing, a
        disk error) fails the request (UNAVAILABLE) and leaves nothing behind."""
        captured = [(i, c) for i, c in enumerate(run.choices) if c.key]
        if not captured:
            return
        sealed: list[tuple[SpoolWriter, str]] = []
        try:
            for index, choice in captured:
                header = run.record_header(index)
                writer = await self.collector.wait_complete(
                    choice.key, header.num_positions, self._settings.capture_timeout_s
                )
                choice.key = ""  # the writer is ours now, not the collector's
                sealed.append((writer, header.record_id))
                header.token_strings.extend(self._tokenizer.decode([t]) for t in header.token_ids)
                seal = asyncio.ensure_future(asyncio.to_thread(self.spool.seal, writer, header))
                try:
                    await asyncio.shield(seal)
                except asyncio.CancelledError:
                    # The thread still writes the capture's files: let it finish before
                    # they are removed (and their descriptors closed).
                    await asyncio.wait([seal])
                    raise
        except CaptureIncomplete as exc:
            logger.error("%s; the request fails and nothing is stored", exc)
            self._abandon(run, sealed)
            raise CaptureFailed(
                "the capture did not receive all its rows in time; nothing was stored"
            ) from exc
        except BaseException:
            self._abandon(run, sealed)
            raise
        for writer, record_id in sealed:
            self.spool.commit(writer, record_id)
            self.sink.submit(record_id)

    def _abandon(self, run: Generation, sealed: list[tuple[SpoolWriter, str]]) -> None:
        for writer, _ in sealed:
            self.spool.abandon(writer)
        self._discard(run)


def _longest_token(tokenizer: Any) -> int:
    """Characters of the vocabulary's longest token string: a token decodes to at most as
    many (byte-level BPE spells each byte as one character; SentencePiece one per character),
    special tokens to themselves."""
    return max((len(token) for token in tokenizer.get_vocab()), default=16)
