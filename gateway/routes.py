"""Thin HTTP routes: the handlers live on app.state, the logic in serving_*.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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
async def health(request: Request) -> JSONResponse:
    """Readiness: 200 only when a completion can be served now (inference answers and its
    model is loaded), else 503 with the same details, as vLLM's and TGI's servers answer.
    The details say what the capture pipeline holds (records waiting in the spool when
    storage is slow or down)."""
    inference = await request.app.state.backend.status()
    ready = inference.get("status") == "ok" and bool(inference.get("ready"))
    body = {"status": "ok" if ready else "unavailable", "inference": inference}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/health/live")
async def live() -> dict[str, str]:
    """Liveness: 200 while the gateway process serves HTTP, whatever inference is doing."""
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this gateway (prometheus_client's text format)."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


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
