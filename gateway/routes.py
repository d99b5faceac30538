"""Thin HTTP routes: the handlers live on app.state, the logic in serving_*.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499

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


async def _unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """`work`'s result, or, once the client has gone away, an empty 499 ("client closed
    request", as nginx logs it): the work is cancelled then, which aborts its generation in the
    engine (as vLLM's server does), instead of computing an answer nobody reads."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    logger.info("%s: the client went away; its generation was aborted", request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _disconnected(request: Request) -> None:
    # The body is read already: the next message on the connection is its end.
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
            return await _unless_disconnected(request, answer())
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
