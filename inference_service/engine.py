"""A vLLM AsyncLLM engine with per-request hidden-state capture.

The engine core runs in its own process; capture hooks live in its worker
(capture_worker.py) and stream rows back over a Unix socket to the CaptureCollector. When a
request finishes, its rows are gathered and handed to the storage sink in the background: the
caller gets the result without waiting for any of that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from actlog.ids import new_record_id
from inference_service import capture_worker
from inference_service.capture import CaptureCollector
from inference_service.config import InferenceSettings
from inference_service.default_model import DEFAULT_MODEL_NAME, resolve_model
from inference_service.errors import CaptureIncomplete, EngineNotReady, InvalidRequest
from inference_service.layers import recommended_layers, resolve_layers
from inference_service.sink import RecordSink
from inference_service.types import (
    CapturedRecord,
    GenerationRequest,
    GenerationResult,
    TokenDelta,
    prompt_hash,
)

logger = logging.getLogger(__name__)

WORKER_EXTENSION = f"{capture_worker.__name__}.ActivationCaptureExtension"


@dataclass(frozen=True)
class ModelDescription:
    model: str
    num_layers: int
    hidden_size: int
    dtype: str
    max_model_len: int
    default_layers: tuple[int, ...]
    recommended_layers: tuple[int, ...]


class CaptureEngine:
    def __init__(self, settings: InferenceSettings, sink: RecordSink) -> None:
        self._settings = settings
        self._sink = sink
        self._collector = CaptureCollector(settings.capture_socket_dir or None)
        self._background: set[asyncio.Task[None]] = set()
        self._llm = None
        self._tokenizer = None
        self.info: ModelDescription | None = None
        self._chunked_prefill = False
        self._is_cpu = False

    async def start(self) -> ModelDescription:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self._settings
        cache = Path(s.model_cache_dir) if s.model_cache_dir else None
        model_path = resolve_model(s.model, cache)
        served = s.served_model_name or (
            DEFAULT_MODEL_NAME if model_path != s.model else s.model.rstrip("/").split("/")[-1]
        )
        self._is_cpu = current_platform.is_cpu()
        self._chunked_prefill = (
            not self._is_cpu
            if s.enable_chunked_prefill == "auto"
            else s.enable_chunked_prefill == "true"
        )
        kwargs: dict[str, object] = {
            "model": model_path,
            "served_model_name": served,
            "dtype": s.dtype,
            # Hooks on inner layers never fire inside torch.compile'd / graph-captured regions.
            "enforce_eager": True,
            "worker_extension_cls": WORKER_EXTENSION,
            "enable_chunked_prefill": self._chunked_prefill,
            "enable_prefix_caching": s.enable_prefix_caching,
        }
        if s.max_model_len:
            kwargs["max_model_len"] = s.max_model_len
        if s.max_num_seqs:
            kwargs["max_num_seqs"] = s.max_num_seqs
        if s.max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = s.max_num_batched_tokens
        if s.gpu_memory_utilization:
            kwargs["gpu_memory_utilization"] = s.gpu_memory_utilization
        logger.info("starting vLLM engine: %s", kwargs)
        args = AsyncEngineArgs(**kwargs)  # type: ignore[arg-type]
        if not self._chunked_prefill and not s.max_num_batched_tokens:
            # Without chunked prefill a whole prompt must fit one step.
            args.max_num_batched_tokens = max(s.max_model_len or 8192, 2048)
        self._llm = AsyncLLM.from_engine_args(args)
        await self._collector.start()
        shapes = await self._llm.collective_rpc("actlog_install")
        shape = shapes[0]
        self._tokenizer = self._llm.get_tokenizer()
        num_layers = int(shape["num_layers"])
        default_layers = resolve_layers(*_parse_layers(s.capture_default_layers), num_layers)
        self.info = ModelDescription(
            model=served,
            num_layers=num_layers,
            hidden_size=int(shape["hidden_size"]),
            dtype=str(shape["dtype"]),
            max_model_len=int(self._llm.model_config.max_model_len),
            default_layers=tuple(default_layers),
            recommended_layers=tuple(recommended_layers(num_layers)),
        )
        logger.info("engine ready: %s", self.info)
        return self.info

    async def stop(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=self._settings.capture_timeout_s)
        if self._llm is not None:
            self._llm.shutdown()
        await self._collector.close()

    def require_ready(self) -> ModelDescription:
        if self.info is None:
            raise EngineNotReady("the model is still loading")
        return self.info

    @property
    def pending_captures(self) -> int:
        return self._collector.pending

    def _sampling_params(self, req: GenerationRequest, capture_key: str | None, layers: list[int]):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = req.sampling
        if s.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be at least 1, got {s.max_tokens}")
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
        kwargs: dict[str, object] = {
            "max_tokens": s.max_tokens,
            "stop": list(s.stop) or None,
            "seed": seed,
            "output_kind": RequestOutputKind.CUMULATIVE,
        }
        for name in ("temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty"):
            value = getattr(s, name)
            if value is not None:
                kwargs[name] = value
        if capture_key is not None:
            kwargs["extra_args"] = {
                capture_worker.KEY: capture_key,
                capture_worker.LAYERS: layers,
                capture_worker.SINK: self._collector.path,
            }
            # Rows served from the prefix cache are never computed, so never captured.
            kwargs["skip_reading_prefix_cache"] = True
        try:
            return SamplingParams(**kwargs)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(str(exc)) from exc

    def _capture_layers(self, req: GenerationRequest) -> list[int] | None:
        info = self.require_ready()
        c = req.capture
        enabled = self._settings.capture_default if c.enabled is None else c.enabled
        if not enabled:
            if c.layers or c.preset:
                raise InvalidRequest("capture layers were given but capture is off")
            return None
        if not c.layers and not c.preset:
            return list(info.default_layers)
        return resolve_layers(c.layers, c.preset, info.num_layers)

    async def generate(
        self, req: GenerationRequest
    ) -> AsyncIterator[TokenDelta | GenerationResult]:
        info = self.require_ready()
        if req.prompt is not None:
            if not req.prompt:
                raise InvalidRequest("prompt must not be empty")
            prompt: object = req.prompt
            prompt_text = req.prompt
        else:
            ids = list(req.prompt_token_ids or ())
            if not ids:
                raise InvalidRequest("prompt_token_ids must not be empty")
            vocab = len(self._tokenizer)  # type: ignore[arg-type]
            if any(i >= vocab for i in ids):
                raise InvalidRequest(f"prompt token ids must be below the vocabulary size {vocab}")
            prompt = {"prompt_token_ids": ids}
            prompt_text = self._tokenizer.decode(ids)  # type: ignore[union-attr]
        layers = self._capture_layers(req)
        record_id = new_record_id() if layers is not None else ""
        request_id = req.request_id or uuid.uuid4().hex
        params = self._sampling_params(req, record_id or None, layers or [])
        if layers is not None:
            self._collector.register(record_id, layers, info.hidden_size, info.dtype)

        sent_tokens = 0
        sent_text = 0
        final = None
        try:
            async for out in self._llm.generate(prompt, params, request_id):  # type: ignore[union-attr]
                choice = out.outputs[0]
                if len(choice.token_ids) > sent_tokens or len(choice.text) > sent_text:
                    yield TokenDelta(tuple(choice.token_ids[sent_tokens:]), choice.text[sent_text:])
                    sent_tokens, sent_text = len(choice.token_ids), len(choice.text)
                final = out
        except ValueError as exc:
            # vLLM validates prompt length and parameters when the request is added.
            self._collector.discard(record_id)
            raise InvalidRequest(str(exc)) from exc
        except BaseException:
            self._collector.discard(record_id)
            raise
        assert final is not None
        choice = final.outputs[0]
        phash = prompt_hash(prompt_text)
        if layers is not None:
            record = CapturedRecord(
                record_id=record_id,
                request_id=request_id,
                prompt=prompt_text,
                prompt_hash=phash,
                response=choice.text,
                model=info.model,
                token_ids=list(final.prompt_token_ids) + list(choice.token_ids),
                token_strings=[],
                prompt_length=len(final.prompt_token_ids),
                sampling_params_json=json.dumps(asdict(req.sampling)),
                layers=layers,
                num_positions=len(final.prompt_token_ids) + len(choice.token_ids) - 1,
                hidden_size=info.hidden_size,
                dtype=info.dtype,
                num_layers=info.num_layers,
                finish_reason=str(choice.finish_reason or ""),
                created_at_ms=int(time.time() * 1000),
            )
            task = asyncio.create_task(self._finish_capture(record))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        yield GenerationResult(
            text=choice.text,
            prompt_token_ids=tuple(final.prompt_token_ids),
            output_token_ids=tuple(choice.token_ids),
            finish_reason=str(choice.finish_reason or ""),
            prompt_hash=phash,
            record_id=record_id,
            layers=tuple(layers or ()),
            model=info.model,
        )

    async def _finish_capture(self, record: CapturedRecord) -> None:
        try:
            record.activations = await self._collector.collect(
                record.record_id, record.num_positions, self._settings.capture_timeout_s
            )
        except CaptureIncomplete:
            logger.exception("capture of record %s is incomplete; not stored", record.record_id)
            return
        tok = self._tokenizer
        record.token_strings = [tok.decode([t]) for t in record.token_ids]  # type: ignore[union-attr]
        self._sink.submit(record)


def _parse_layers(spec: str) -> tuple[list[int], str]:
    spec = spec.strip()
    if spec in ("last", "all", "recommended"):
        return [], spec
    return [int(part) for part in spec.split(",") if part.strip()], ""
