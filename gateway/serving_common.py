"""What completions and chat share: engine parameters, logprob shapes, SSE framing, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from actlog_common.v1 import inference_pb2
from gateway.backends import InferenceBackend
from gateway.errors import GatewayError
from gateway.protocol import (
    ChatLogprobs,
    ChatTokenLogprob,
    ChatTopLogprob,
    CompletionLogprobs,
    SamplingFields,
)

T = TypeVar("T")


async def check_model(backend: InferenceBackend, requested: str) -> inference_pb2.ModelInfo:
    info = await backend.model_info()
    if requested not in (info.model, "default"):
        raise GatewayError(
            f"The model `{requested}` does not exist. Available: {info.model}",
            404,
            param="model",
            code="model_not_found",
        )
    return info


def generate_request(
    req: SamplingFields,
    *,
    max_tokens: int,
    request_id: str,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
) -> inference_pb2.GenerateRequest:
    """The inference request for one prompt; the caller sets its input."""
    sampling = inference_pb2.SamplingParams(
        max_tokens=max_tokens, stop=req.stop_list(), n=req.n, ignore_eos=req.ignore_eos
    )
    for name in ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value is not None:
            setattr(sampling, name, value)
    if logprobs is not None:
        sampling.logprobs = logprobs
    if prompt_logprobs is not None:
        sampling.prompt_logprobs = prompt_logprobs
    capture = inference_pb2.CaptureOptions(dtype=req.capture_dtype or "")
    if req.capture is not None:
        capture.enabled = req.capture
    if isinstance(req.capture_layers, str):
        capture.preset = req.capture_layers
    elif req.capture_layers is not None:
        if not req.capture_layers:
            raise GatewayError("capture_layers must not be empty", param="capture_layers")
        capture.layers.extend(req.capture_layers)
    return inference_pb2.GenerateRequest(sampling=sampling, capture=capture, request_id=request_id)


def _top(lp: inference_pb2.TokenLogprob) -> dict[str, float] | None:
    if not lp.HasField("logprob"):
        return None
    top = {t.token: t.logprob for t in lp.top}
    top.setdefault(lp.token, lp.logprob)
    return top


def completion_logprobs(
    lps: Sequence[inference_pb2.TokenLogprob], offset: int = 0
) -> CompletionLogprobs:
    out = CompletionLogprobs()
    for lp in lps:
        out.tokens.append(lp.token)
        out.token_logprobs.append(lp.logprob if lp.HasField("logprob") else None)
        out.top_logprobs.append(_top(lp))
        out.text_offset.append(offset)
        offset += len(lp.token)
    return out


def chat_logprobs(lps: Sequence[inference_pb2.TokenLogprob]) -> ChatLogprobs:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return ChatLogprobs(
        content=[
            ChatTokenLogprob(
                **entry(lp.token, lp.logprob),
                top_logprobs=[ChatTopLogprob(**entry(t.token, t.logprob)) for t in lp.top],
            )
            for lp in lps
        ]
    )


def sse(chunk: BaseModel | str) -> str:
    data = chunk if isinstance(chunk, str) else chunk.model_dump_json(exclude_none=True)
    return f"data: {data}\n\n"


async def check_batch(
    backend: InferenceBackend, messages: list[inference_pb2.GenerateRequest]
) -> None:
    """Refuse a batch of several captured prompts as a whole, before any of them runs: a
    prompt refused after another had finished would leave that one's record stored under a
    response that was an error."""
    captured = [m for m in messages if m.capture.enabled or not m.capture.HasField("enabled")]
    if len(messages) > 1 and captured:
        await gather_all(*(backend.check(m) for m in messages))


async def gather_all(*aws: Awaitable[T]) -> list[T]:
    """Like asyncio.gather, but the first failure cancels the others (so their generations
    stop and their captures are dropped) and is raised itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(aw) for aw in aws]  # type: ignore[arg-type]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return [t.result() for t in tasks]


async def open_streams(
    backend: InferenceBackend, messages: list[inference_pb2.GenerateRequest]
) -> AsyncIterator[tuple[int, inference_pb2.GenerateResponse]]:
    """Start one generation per message and merge their messages as they come.

    The first message of every stream is awaited before this returns, so that bad requests
    fail with a proper HTTP status instead of an error inside a 200 stream.
    """
    await check_batch(backend, messages)
    streams = [backend.stream(m) for m in messages]
    try:
        firsts = await gather_all(*(anext(s) for s in streams))
    except BaseException:
        for stream in streams:
            await stream.aclose()
        raise
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    done = object()

    async def pump(i: int, stream: AsyncIterator[inference_pb2.GenerateResponse]) -> None:
        try:
            async for message in stream:
                await queue.put((i, message))
        except GatewayError as exc:
            await queue.put((i, exc))
        finally:
            await queue.put((i, done))

    async def merged() -> AsyncIterator[tuple[int, inference_pb2.GenerateResponse]]:
        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            for i, first in enumerate(firsts):
                yield i, first
            remaining = len(streams)
            while remaining:
                i, item = await queue.get()
                if item is done:
                    remaining -= 1
                elif isinstance(item, GatewayError):
                    raise item
                else:
                    yield i, item
        finally:
            for task in tasks:
                task.cancel()

    return merged()
