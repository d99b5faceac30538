"""Gateway errors and their OpenAI-shaped HTTP responses, built in one place."""

from __future__ import annotations

from http import HTTPStatus

import grpc
from fastapi.responses import JSONResponse

from gateway.protocol import ErrorInfo, ErrorResponse


class GatewayError(Exception):
    def __init__(
        self,
        message: str,
        status: int = 400,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type_
        self.param = param
        self.code = code


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
    if status == 503:
        message = f"the inference service is unavailable: {message}"
    if status == 500:
        message = "internal error in the inference service"
    return GatewayError(message, status, type_)


def error_response(
    message: str,
    status: int = 400,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorInfo(message=message, type=type_, param=param, code=code or str(status))
    )
    return JSONResponse(status_code=status, content=body.model_dump())


def status_phrase(status: int) -> str:
    return HTTPStatus(status).phrase
