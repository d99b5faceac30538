"""Server interceptors: domain errors to gRPC status codes in one place, and the codecs
of the bulk methods (wire.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from actlog_common.error_metadata import ERROR_TYPE_KEY
from storage_service.errors import (
    ConflictingState,
    InvalidRequest,
    OutOfResources,
    RecordNotFound,
    StorageError,
)

logger = logging.getLogger(__name__)

_CODES: tuple[tuple[type[StorageError], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (RecordNotFound, grpc.StatusCode.NOT_FOUND),
    (ConflictingState, grpc.StatusCode.FAILED_PRECONDITION),
    (OutOfResources, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


def status_code(error: StorageError) -> grpc.StatusCode:
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def public_error_type(error: StorageError, code: grpc.StatusCode) -> str:
    """The domain error name a client may see ("" for INTERNAL: internals stay in the log)."""
    return "" if code == grpc.StatusCode.INTERNAL else type(error).__name__


Explain = Callable[[Exception], StorageError | None]


def _abort(context: grpc.ServicerContext, method: str, error: Exception, explain: Explain) -> None:
    """End the call with the status `error` maps to; never returns."""
    if not isinstance(error, StorageError) and (explained := explain(error)) is not None:
        logger.error("%s: %s (%s)", method, explained, error)
        error = explained
    if isinstance(error, StorageError):
        code, message = status_code(error), str(error)
        logger.info("%s -> %s: %s", method, code.name, message)
    elif not context.is_active():
        code, message = grpc.StatusCode.CANCELLED, "call cancelled"
        logger.info("%s: the client went away (%r)", method, error)
    else:
        code, message = grpc.StatusCode.INTERNAL, "internal error in the storage service"
        logger.error("%s failed", method, exc_info=error)
    if isinstance(error, StorageError) and (error_type := public_error_type(error, code)):
        context.set_trailing_metadata(((ERROR_TYPE_KEY, error_type),))
    context.abort(code, message)


def _wrap_unary(behavior: Callable[..., Any], method: str, explain: Explain) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception as error:  # every error becomes a status
            _abort(context, method, error, explain)

    return handler


def _wrap_stream(
    behavior: Callable[..., Iterator[Any]], method: str, explain: Explain
) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except Exception as error:  # every error becomes a status
            _abort(context, method, error, explain)

    return handler


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns exceptions raised by servicer methods into gRPC statuses.

    StorageError subclasses keep their message; so do errors `explain` turns into one (a
    full disk, a key too large for LMDB); anything else is logged with its traceback and
    reported as INTERNAL with a generic message.
    """

    def __init__(self, explain: Explain = lambda error: None) -> None:
        self._explain = explain

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, self._explain), **codec
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method, self._explain), **codec
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, self._explain), **codec
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, method, self._explain), **codec
            )
        return handler


def _rebuild(handler: grpc.RpcMethodHandler, **codec: Any) -> grpc.RpcMethodHandler:
    """`handler` with the same behaviour and the given (de)serializers."""
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(handler.unary_unary, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(handler.stream_unary, **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(handler.unary_stream, **codec)
    return grpc.stream_stream_rpc_method_handler(handler.stream_stream, **codec)


class CodecInterceptor(grpc.ServerInterceptor):
    """Swaps in other request deserializers / response serializers for some methods.

    `codecs` maps a full method name (``/actlog.v1.Storage/Ingest``) to a dict with
    ``request_deserializer`` and/or ``response_serializer``; other methods keep theirs.
    Storage uses it so that activation rows are neither copied out of received messages
    nor re-serialized on the way out (wire.py).
    """

    def __init__(self, codecs: dict[str, dict[str, Callable[..., Any]]]) -> None:
        self._codecs = codecs

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        override = self._codecs.get(handler_call_details.method)
        if handler is None or override is None:
            return handler
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
            **override,
        }
        return _rebuild(handler, **codec)
