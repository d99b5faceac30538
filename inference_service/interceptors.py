"""Maps domain errors to gRPC status codes once, for every method."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from actlog_common.error_metadata import ERROR_TYPE_KEY, PARAM_KEY
from inference_service.errors import (
    EngineNotReady,
    InferenceError,
    InvalidRequest,
    PromptTooLong,
)
from inference_service.spool import SpoolFull

logger = logging.getLogger(__name__)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, InferenceError) and exc.param:
        context.set_trailing_metadata(((PARAM_KEY, exc.param),))
    if isinstance(exc, PromptTooLong):
        await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
    if isinstance(exc, InvalidRequest):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, EngineNotReady | SpoolFull):
        # Named, so the gateway can tell the service's own refusal from a lost connection.
        context.set_trailing_metadata(((ERROR_TYPE_KEY, type(exc).__name__),))
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
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
