"""Domain errors of the inference service, mapped to gRPC status codes in one interceptor."""

from __future__ import annotations


class InferenceError(Exception):
    """Base of errors a client can act on; `param` names the request field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequest(InferenceError):
    """The request cannot be served as given (INVALID_ARGUMENT)."""


class CaptureIncomplete(InferenceError):
    """A capture did not receive all its rows in time (logged; never reaches a client)."""


class CaptureFailed(InferenceError):
    """A capture's rows or header could not be written to the spool (a disk error): the
    request fails (UNAVAILABLE, so 503 or a stream error) instead of naming a record that
    would never exist."""

    @classmethod
    def writing(cls, record_id: str, error: OSError) -> CaptureFailed:
        return cls(
            f"the capture of record {record_id} could not be written to the capture spool "
            f"({error.strerror or error}); retry, or send capture: false"
        )


class EngineNotReady(InferenceError):
    """The engine is still loading (UNAVAILABLE)."""


class PromptTooLong(InvalidRequest):
    """The prompt exceeds the configured or model limit (OUT_OF_RANGE)."""


class StartupError(Exception):
    """The service cannot start as configured; the message says why and what to change, in
    one line (printed instead of a traceback)."""
