"""`/v1/completions`: OpenAI request -> inference gRPC calls -> OpenAI response or SSE stream."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from actlog_common.v1 import inference_pb2
from gateway.backends import InferenceBackend
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, error_body
from gateway.protocol import (
    ActivationRef,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamChoice,
    CompletionStreamResponse,
    UsageInfo,
)
from gateway.serving_common import (
    check_batch,
    check_model,
    completion_logprobs,
    gather_all,
    generate_request,
    open_streams,
    sse,
)


def activation_ref(results: list[inference_pb2.GenerateResult]) -> ActivationRef | None:
    if not results or not results[0].record_id:
        return None
    return ActivationRef(
        prompt_hash=results[0].prompt_hash,
        record_ids=[r.record_id for r in results],
        layers=list(results[0].layers),
    )


class OpenAIServingCompletion:
    def __init__(self, backend: InferenceBackend, settings: GatewaySettings) -> None:
        self._backend = backend
        self._settings = settings

    def _messages(self, req: CompletionRequest) -> list[inference_pb2.GenerateRequest]:
        prompts = req.prompts()
        if not prompts:
            raise GatewayError("prompt must not be empty", param="prompt")
        if len(prompts) > self._settings.max_batch_prompts:
            raise GatewayError(
                f"at most {self._settings.max_batch_prompts} prompts per request", param="prompt"
            )
        max_tokens = req.max_tokens or 16
        if max_tokens > self._settings.max_tokens_limit:
            raise GatewayError(
                f"max_tokens {max_tokens} is above this server's limit of "
                f"{self._settings.max_tokens_limit}", param="max_tokens",
            )  # fmt: skip
        if req.echo and req.stream:
            raise GatewayError("echo is not supported with stream", param="echo")
        base_id = uuid.uuid4().hex
        messages = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str) and not prompt:
                raise GatewayError("prompt must not be empty", param="prompt")
            if isinstance(prompt, list) and (not prompt or any(t < 0 for t in prompt)):
                raise GatewayError("prompt token ids must be non-negative", param="prompt")
            message = generate_request(
                req,
                max_tokens=max_tokens,
                request_id=f"cmpl-{base_id}-{i}",
                logprobs=req.logprobs,
                prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else None,
            )
            # The request's prompts share its cap on captured bytes (CAPTURE_MAX_BYTES).
            message.capture.request_prompts = len(prompts)
            if isinstance(prompt, str):
                message.prompt = prompt
            else:
                message.prompt_token_ids.ids.extend(prompt)
            messages.append(message)
        return messages

    async def create_completion(self, req: CompletionRequest) -> CompletionResponse:
        info = await check_model(self._backend, req.model)
        messages = self._messages(req)
        await check_batch(self._backend, messages)
        per_prompt = await gather_all(*(self._backend.generate(m) for m in messages))
        choices = []
        refs = []
        usage = UsageInfo()
        for results in per_prompt:
            usage.prompt_tokens += len(results[0].prompt_token_ids)
            for result in results:
                text = result.text
                logprobs = None
                if req.logprobs is not None:
                    lps = list(result.logprobs)
                    if req.echo:
                        lps = list(result.prompt_logprobs) + lps
                    logprobs = completion_logprobs(lps)
                if req.echo:
                    text = result.prompt + text
                choices.append(
                    CompletionChoice(
                        index=len(choices),
                        text=text,
                        logprobs=logprobs,
                        finish_reason=result.finish_reason,
                    )  # fmt: skip
                )
                usage.completion_tokens += len(result.output_token_ids)
            if (ref := activation_ref(results)) is not None:
                refs.append(ref)
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        return CompletionResponse(
            id=messages[0].request_id.rsplit("-", 1)[0],
            model=info.model,
            choices=choices,
            usage=usage,
            activations=refs or None,
        )

    async def stream_completion(self, req: CompletionRequest) -> AsyncIterator[str]:
        """Validate and start; errors before the first token become HTTP errors."""
        info = await check_model(self._backend, req.model)
        messages = self._messages(req)
        merged = await open_streams(self._backend, messages)
        return self._sse(req, info.model, messages, merged)

    async def _sse(self, req, model, messages, merged) -> AsyncIterator[str]:
        request_id = messages[0].request_id.rsplit("-", 1)[0]
        usage = UsageInfo()
        offsets: dict[int, int] = {}
        results: dict[int, list[inference_pb2.GenerateResult]] = {}
        try:
            async for prompt_i, message in merged:
                index = prompt_i * req.n
                if message.HasField("delta"):
                    delta = message.delta
                    choice = index + delta.index
                    logprobs: CompletionLogprobs | None = None
                    if req.logprobs is not None:
                        logprobs = completion_logprobs(delta.logprobs, offsets.get(choice, 0))
                    offsets[choice] = offsets.get(choice, 0) + len(delta.text)
                    chunk = CompletionStreamChoice(index=choice, text=delta.text, logprobs=logprobs)
                    yield sse(CompletionStreamResponse(id=request_id, model=model, choices=[chunk]))
                    continue
                result = message.result
                done = results.setdefault(prompt_i, [])
                done.append(result)
                if result.index == 0:
                    usage.prompt_tokens += len(result.prompt_token_ids)
                usage.completion_tokens += len(result.output_token_ids)
                ref = activation_ref(done) if len(done) == req.n else None
                final = CompletionStreamChoice(
                    index=index + result.index, text="", finish_reason=result.finish_reason
                )
                yield sse(CompletionStreamResponse(
                    id=request_id, model=model, choices=[final],
                    activations=[ref] if ref else None,
                ))  # fmt: skip
            if req.include_usage():
                usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
                yield sse(
                    CompletionStreamResponse(id=request_id, model=model, choices=[], usage=usage)
                )
        except GatewayError as exc:
            yield error_body(exc, stream=True)
        yield sse("[DONE]")
