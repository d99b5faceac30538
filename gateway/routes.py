"""Thin HTTP routes: the handlers live on app.state, the logic in serving_*.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from gateway.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """200 while the gateway is up; details say whether inference answers and what its
    capture pipeline holds (records waiting in the spool when storage is slow or down)."""
    return {"status": "ok", "inference": await request.app.state.backend.status()}


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    info = await request.app.state.backend.model_info()
    return ModelList(data=[ModelCard(id=info.model, max_model_len=info.max_model_len)])


async def _serve(
    request: Request,
    stream: bool,
    start_stream: Callable[[], Awaitable[AsyncIterator[str]]],
    answer: Callable[[], Awaitable[Any]],
) -> Any:
    """Hold a concurrency slot for the whole generation: the response, or the full stream."""
    limit = request.app.state.limit
    limit.acquire()
    if not stream:
        try:
            return await answer()
        finally:
            limit.release()
    try:
        chunks = await start_stream()
    except BaseException:
        limit.release()
        raise

    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            limit.release()

    return StreamingResponse(body(), media_type="text/event-stream")


@router.post("/v1/completions", response_model=CompletionResponse, response_model_exclude_none=True)
async def create_completion(body: CompletionRequest, request: Request) -> Any:
    serving = request.app.state.completions
    return await _serve(
        request,
        body.stream,
        lambda: serving.stream_completion(body),
        lambda: serving.create_completion(body),
    )


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    response_model_exclude_none=True,
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    serving = request.app.state.chat
    return await _serve(
        request,
        body.stream,
        lambda: serving.stream_chat_completion(body),
        lambda: serving.create_chat_completion(body),
    )
