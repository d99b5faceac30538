"""`/v1/chat/completions`: messages rendered with the model's chat template by the inference
service (so the prompt hash is the hash of the rendered prompt), answered whole or as SSE."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from actlog_common.v1 import inference_pb2
from gateway.backends import InferenceBackend
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, error_body
from gateway.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatDelta,
    ChatResponseMessage,
    ChatStreamChoice,
    UsageInfo,
)
from gateway.serving_common import (
    chat_logprobs,
    check_model,
    generate_request,
    open_streams,
    sse,
)
from gateway.serving_completion import activation_ref


class OpenAIServingChat:
    def __init__(self, backend: InferenceBackend, settings: GatewaySettings) -> None:
        self._backend = backend
        self._settings = settings

    def _message(
        self, req: ChatCompletionRequest, info: inference_pb2.ModelInfo
    ) -> inference_pb2.GenerateRequest:
        limit = self._settings.max_tokens_limit
        # Without max_tokens, chat may use what remains of the context (as vLLM's server),
        # up to the server's limit: the inference service clips it to the rendered prompt.
        asked = req.token_limit()
        max_tokens = asked or limit
        if max_tokens > limit:
            raise GatewayError(
                f"max_tokens {max_tokens} is above this server's limit of {limit}",
                param="max_tokens",
            )
        if req.top_logprobs is not None and not req.logprobs:
            raise GatewayError("top_logprobs needs logprobs: true", param="top_logprobs")
        message = generate_request(
            req,
            max_tokens=max_tokens,
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        )
        message.sampling.fit_context = asked is None
        for m in req.messages:
            message.chat.messages.add(role=m.role, content=m.text())
        return message

    async def create_chat_completion(self, req: ChatCompletionRequest) -> ChatCompletionResponse:
        info = await check_model(self._backend, req.model)
        message = self._message(req, info)
        results = await self._backend.generate(message)
        usage = UsageInfo(prompt_tokens=len(results[0].prompt_token_ids))
        choices = []
        for r in results:
            usage.completion_tokens += len(r.output_token_ids)
            choices.append(
                ChatChoice(
                    index=r.index,
                    message=ChatResponseMessage(content=r.text),
                    logprobs=chat_logprobs(r.logprobs) if req.logprobs else None,
                    finish_reason=r.finish_reason,
                )
            )
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        ref = activation_ref(results)
        return ChatCompletionResponse(
            id=message.request_id, model=info.model, choices=choices, usage=usage,
            activations=[ref] if ref else None,
        )  # fmt: skip

    async def stream_chat_completion(self, req: ChatCompletionRequest) -> AsyncIterator[str]:
        info = await check_model(self._backend, req.model)
        message = self._message(req, info)
        merged = await open_streams(self._backend, [message])
        return self._sse(req, info.model, message.request_id, merged)

    async def _sse(self, req, model, request_id, merged) -> AsyncIterator[str]:
        def chunk(**fields) -> str:
            return sse(ChatCompletionStreamResponse(id=request_id, model=model, **fields))

        usage = UsageInfo()
        results: list[inference_pb2.GenerateResult] = []
        started: set[int] = set()
        try:
            async for _, m in merged:
                index = m.delta.index if m.HasField("delta") else m.result.index
                if index not in started:
                    started.add(index)
                    yield chunk(choices=[ChatStreamChoice(
                        index=index, delta=ChatDelta(role="assistant", content=""))])  # fmt: skip
                if m.HasField("delta"):
                    logprobs = chat_logprobs(m.delta.logprobs) if req.logprobs else None
                    yield chunk(choices=[ChatStreamChoice(
                        index=index, delta=ChatDelta(content=m.delta.text), logprobs=logprobs,
                    )])  # fmt: skip
                    continue
                results.append(m.result)
                usage.prompt_tokens = len(m.result.prompt_token_ids)
                usage.completion_tokens += len(m.result.output_token_ids)
                ref = activation_ref(sorted(results, key=lambda r: r.index))
                yield chunk(
                    choices=[ChatStreamChoice(index=index, delta=ChatDelta(),
                                              finish_reason=m.result.finish_reason)],
                    activations=[ref] if ref and len(results) == req.n else None,
                )  # fmt: skip
            if req.include_usage():
                usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
                yield chunk(choices=[], usage=usage)
        except GatewayError as exc:
            yield error_body(exc, stream=True)
        yield sse("[DONE]")
