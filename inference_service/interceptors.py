"""Maps domain errors to gRPC status codes once, for every method."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from actlog_common.error_metadata import ERROR_TYPE_KEY, PARAM_KEY
from inference_service.capture.spool import SpoolFull
from inference_service.errors import (
    CaptureFailed,
    EngineNotReady,
    InferenceError,
    InvalidRequest,
    PromptTooLong,
)

logger = logging.getLogger(__name__)


# Domain error -> gRPC status, most specific first (PromptTooLong is an InvalidRequest).
_CODES: tuple[tuple[type[InferenceError], grpc.StatusCode], ...] = (
    (PromptTooLong, grpc.StatusCode.OUT_OF_RANGE),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (EngineNotReady, grpc.StatusCode.UNAVAILABLE),
    (SpoolFull, grpc.StatusCode.UNAVAILABLE),
    (CaptureFailed, grpc.StatusCode.UNAVAILABLE),
)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the call with the status `exc` maps to; never returns (abort raises)."""
    for error_type, code in _CODES:
        if isinstance(exc, error_type):
            # Named, so the gateway can tell the service's own refusal (UNAVAILABLE for a
            # loading engine or a full spool) from a lost connection; and the field at fault.
            metadata = [(ERROR_TYPE_KEY, type(exc).__name__)]
            if exc.param:
                metadata.append((PARAM_KEY, exc.param))
            await context.abort(code, str(exc), trailing_metadata=tuple(metadata))
    # Anything else is a bug or an internal failure: its class and message stay in the log.
    logger.exception("unhandled error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the inference service log")


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except (grpc.aio.AbortError, GeneratorExit):
                    raise
                except Exception as exc:  # noqa: BLE001
                    await _abort(context, exc)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await inner_unary(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    await _abort(context, exc)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        return handler
