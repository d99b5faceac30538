"""FastAPI application: OpenAI-compatible routes over the inference service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from actlog_common.grpc_security import GrpcSecurity
from gateway.backends import InferenceBackend
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, error_response
from gateway.limits import ConcurrencyLimit, GuardMiddleware
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.protocol import InvalidField
from gateway.routes import router
from gateway.serving_chat import OpenAIServingChat
from gateway.serving_completion import OpenAIServingCompletion

logger = logging.getLogger(__name__)


def build_app(settings: GatewaySettings, backend: InferenceBackend | None = None) -> FastAPI:
    """The gateway on the inference service at `settings.inference_addr`, or on `backend`
    (what the gateway's own tests pass: a stand-in for the inference service)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        inference = backend
        if inference is None:
            inference = InferenceBackend(
                settings.inference_addr,
                settings.grpc_max_message_bytes,
                settings.request_timeout_s,
                metrics,
                GrpcSecurity.of(settings),
            )
        app.state.backend = inference
        app.state.completions = OpenAIServingCompletion(inference, settings)
        app.state.chat = OpenAIServingChat(inference, settings)
        app.state.limit = limit = ConcurrencyLimit(settings.max_concurrent_requests)
        metrics.in_flight.set_function(lambda: limit.active)
        try:
            yield
        finally:
            await inference.close()

    metrics = GatewayMetrics()
    app = FastAPI(title="actlog gateway", version="0.1.0", lifespan=lifespan)
    app.state.metrics = metrics
    app.include_router(router)
    app.add_middleware(
        GuardMiddleware, keys=settings.keys(), max_body_bytes=settings.max_body_bytes
    )
    # Added last, so outermost: it sees the guards' 401 and 413 too.
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        if exc.status >= 500:
            logger.warning(
                "%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message
            )
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        cause = first.get("ctx", {}).get("error")
        param = cause.path if isinstance(cause, InvalidField) else ".".join(loc) or None
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in errors[:5]
        )
        # 400, not FastAPI's 422: what OpenAI's API and vLLM's server answer.
        return error_response(GatewayError(message or "invalid request", 400, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail or HTTPStatus(exc.status_code).phrase)
        return error_response(GatewayError(message, exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(GatewayError("internal server error", 500))

    return app
