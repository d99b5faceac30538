"""`/v1/completions`: OpenAI request -> inference gRPC calls -> OpenAI response."""

from __future__ import annotations

import asyncio
import logging
import uuid

from actlog.v1 import inference_pb2
from gateway.backends import InferenceBackend
from gateway.errors import GatewayError
from gateway.protocol import (
    ActivationRef,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
)

logger = logging.getLogger(__name__)


def to_generate_request(
    req: CompletionRequest, prompt: str | list[int], request_id: str
) -> inference_pb2.GenerateRequest:
    sampling = inference_pb2.SamplingParams(
        max_tokens=req.max_tokens or 16, stop=req.stop_list(), n=req.n
    )
    for name in ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value is not None:
            setattr(sampling, name, value)
    capture = inference_pb2.CaptureOptions()
    if req.capture is not None:
        capture.enabled = req.capture
    if isinstance(req.capture_layers, str):
        capture.preset = req.capture_layers
    elif req.capture_layers is not None:
        if not req.capture_layers:
            raise GatewayError("capture_layers must not be empty", param="capture_layers")
        capture.layers.extend(req.capture_layers)
    message = inference_pb2.GenerateRequest(
        sampling=sampling, capture=capture, request_id=request_id
    )
    if isinstance(prompt, str):
        message.prompt = prompt
    else:
        message.prompt_token_ids.ids.extend(prompt)
    return message


class OpenAIServingCompletion:
    def __init__(self, backend: InferenceBackend) -> None:
        self._backend = backend

    async def create_completion(self, req: CompletionRequest) -> CompletionResponse:
        info = await self._backend.model_info()
        if req.model not in (info.model, "default"):
            raise GatewayError(
                f"The model `{req.model}` does not exist. Available: {info.model}",
                status=404,
                type_="NotFoundError",
                param="model",
                code="model_not_found",
            )
        prompts = req.prompts()
        if not prompts:
            raise GatewayError("prompt must not be empty", param="prompt")
        for p in prompts:
            if isinstance(p, str) and not p:
                raise GatewayError("prompt must not be empty", param="prompt")
            if isinstance(p, list) and any(t < 0 for t in p):
                raise GatewayError("prompt token ids must be non-negative", param="prompt")
        base_id = uuid.uuid4().hex
        messages = [
            to_generate_request(req, p, f"cmpl-{base_id}-{i}") for i, p in enumerate(prompts)
        ]
        per_prompt = await asyncio.gather(*(self._backend.generate(m) for m in messages))
        choices = []
        refs = []
        usage = UsageInfo()
        for results in per_prompt:
            usage.prompt_tokens += len(results[0].prompt_token_ids)
            for result in results:
                choices.append(
                    CompletionChoice(
                        index=len(choices), text=result.text, finish_reason=result.finish_reason
                    )
                )
                usage.completion_tokens += len(result.output_token_ids)
            if results[0].record_id:
                refs.append(
                    ActivationRef(
                        prompt_hash=results[0].prompt_hash,
                        record_ids=[r.record_id for r in results],
                        layers=list(results[0].layers),
                    )
                )
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        return CompletionResponse(
            id=f"cmpl-{base_id}",
            model=info.model,
            choices=choices,
            usage=usage,
            activations=refs or None,
        )
