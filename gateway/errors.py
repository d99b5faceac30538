"""Gateway errors and their OpenAI-shaped bodies, built in one place.

An error's `type` follows from its HTTP status alone (ERROR_TYPES), as vLLM's OpenAI server
names them, so a client sees one type per status wherever the error started: in a route, in
a guard, in the inference service, or in the middle of a stream.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

import grpc
from fastapi.responses import Response

from actlog_common.error_metadata import ERROR_TYPE_KEY, PARAM_KEY
from gateway.protocol import ErrorInfo, ErrorResponse

logger = logging.getLogger(__name__)


# Sent with 429 and 503: clients (OpenAI's SDKs among them) wait this long before a retry.
RETRY_AFTER = {"Retry-After": "1"}
_RETRY_STATUSES = (429, 503)

# HTTP status -> OpenAI error `type`, as vLLM 0.32's OpenAI server answers (its
# create_error_response); any other status gets its HTTP phrase ("Too Many Requests"), as
# vLLM's HTTPException handler gives it.
ERROR_TYPES: dict[int, str] = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


def error_type(status: int) -> str:
    """The `type` of every error answered with `status`."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # not a registered status (nginx's 499, say)
        return "Error"


class GatewayError(Exception):
    """An error a client gets as an OpenAI error body: its status decides its `type`, and
    429 and 503 say when to retry (Retry-After)."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code

    @property
    def type(self) -> str:
        return error_type(self.status)

    @property
    def headers(self) -> dict[str, str] | None:
        return dict(RETRY_AFTER) if self.status in _RETRY_STATUSES else None


# gRPC status of a failed inference call -> HTTP status of the gateway's answer; any other
# code is the service's fault or the gateway's (a bad token, a method it lacks): 500.
_GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 413,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def from_grpc(exc: grpc.aio.AioRpcError) -> GatewayError:
    status = _GRPC_TO_HTTP.get(exc.code(), 500)
    message = exc.details() or exc.code().name
    metadata = dict(exc.trailing_metadata() or ())
    if status == 503 and ERROR_TYPE_KEY not in metadata:
        # Not the service's own refusal: gRPC's details name internal addresses
        # ("ipv4:127.0.0.1:50051: ..."). They stay in the log; clients get what to do.
        logger.warning("inference unavailable: %s", message)
        message = "the inference service is unavailable; retry shortly"
    if status == 500:
        message = "internal error in the inference service"
    param = metadata.get(PARAM_KEY)
    return GatewayError(message, status, param=param if isinstance(param, str) else None)


def error_body(exc: GatewayError, *, stream: bool = False) -> str:
    """The one builder of error bodies: the JSON `{"error": {...}}` of a response, or, with
    `stream`, the same JSON as one server-sent event (`data: {...}` and a blank line)."""
    body = ErrorResponse(
        error=ErrorInfo(
            message=exc.message, type=exc.type, param=exc.param, code=exc.code or str(exc.status)
        )
    )
    data = json.dumps(body.model_dump())
    return f"data: {data}\n\n" if stream else data


def error_response(exc: GatewayError) -> Response:
    """`exc` as an HTTP response: its status, its body, and Retry-After where it applies."""
    return Response(error_body(exc), exc.status, headers=exc.headers, media_type="application/json")
