"""Typed errors raised by actlog clients, one per gRPC status a caller can act on."""

from __future__ import annotations

import grpc

from actlog_common.error_metadata import ERROR_TYPE_KEY


class ActlogError(Exception):
    """Base class of every error an actlog client raises.

    `code` is the gRPC status code (None for client-side errors), `details` the server's
    message and `error_type` the server's domain error name when it sent one.
    """

    code: grpc.StatusCode | None = None

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code
        self.error_type = error_type


class InvalidArgumentError(ActlogError, ValueError):
    """The request was malformed (bad id or hash, unknown layer, bad rows...)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(ActlogError, LookupError):
    """No such record."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(ActlogError):
    """The record is not in a state that allows the request (e.g. it is still partial)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(ActlogError):
    """A limit was hit (message size, quota)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(ActlogError, ConnectionError):
    """The service cannot be reached or is shutting down; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(ActlogError, TimeoutError):
    """The call did not finish within its timeout."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class InternalError(ActlogError):
    """The service failed; its log has the details."""

    code = grpc.StatusCode.INTERNAL


class WaitTimeoutError(ActlogError, TimeoutError):
    """A client-side wait (e.g. for a record to be stored) ran out of time."""


_BY_CODE: dict[grpc.StatusCode, type[ActlogError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        FailedPreconditionError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
        InternalError,
    )
    if cls.code is not None
}


def from_rpc_error(error: grpc.RpcError) -> ActlogError:
    """The typed error for a failed gRPC call."""
    code = error.code() if isinstance(error, grpc.Call) else None
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    error_type = None
    if isinstance(error, grpc.Call):
        for key, value in error.trailing_metadata() or ():
            if key == ERROR_TYPE_KEY:
                error_type = value
    cls = _BY_CODE.get(code, ActlogError) if code is not None else ActlogError
    return cls(details, code=code, error_type=error_type)


def from_status(code_name: str, details: str, error_type: str | None = None) -> ActlogError:
    """The typed error for a status given by name (e.g. over the local read socket)."""
    code = grpc.StatusCode[code_name] if code_name in grpc.StatusCode.__members__ else None
    cls = _BY_CODE.get(code, ActlogError) if code is not None else ActlogError
    return cls(details, code=code, error_type=error_type)
