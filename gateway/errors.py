"""Gateway errors and their OpenAI-shaped HTTP responses, built in one place."""

from __future__ import annotations

import logging
from http import HTTPStatus

import grpc
from fastapi.responses import JSONResponse

from actlog_common.error_metadata import ERROR_TYPE_KEY, PARAM_KEY
from gateway.protocol import ErrorInfo, ErrorResponse

logger = logging.getLogger(__name__)


# Sent with 429 and 503: clients (OpenAI's SDKs among them) wait this long before a retry.
RETRY_AFTER = {"Retry-After": "1"}


class GatewayError(Exception):
    def __init__(
        self,
        message: str,
        status: int = 400,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers


_GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (413, "invalid_request_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}


def from_grpc(exc: grpc.aio.AioRpcError) -> GatewayError:
    status, type_ = _GRPC_TO_HTTP.get(exc.code(), (500, "internal_error"))
    message = exc.details() or exc.code().name
    headers = None
    metadata = dict(exc.trailing_metadata() or ())
    if status in (429, 503):
        headers = RETRY_AFTER
    if status == 503 and ERROR_TYPE_KEY not in metadata:
        # Not the service's own refusal: gRPC's details name internal addresses
        # ("ipv4:127.0.0.1:50051: ..."). They stay in the log; clients get what to do.
        logger.warning("inference unavailable: %s", message)
        message = "the inference service is unavailable; retry shortly"
    if status == 500:
        message = "internal error in the inference service"
    param = metadata.get(PARAM_KEY)
    return GatewayError(message, status, type_, param=param if isinstance(param, str) else None,
                        headers=headers)  # fmt: skip


def error_response(
    message: str,
    status: int = 400,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorInfo(message=message, type=type_, param=param, code=code or str(status))
    )
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def status_phrase(status: int) -> str:
    return HTTPStatus(status).phrase
