"""The inference service's one mapping of domain errors to gRPC statuses (ErrorMappingInterceptor).

grpc_testing (grpcio-testing) cannot drive this interceptor: its test server takes servicers
only (`server_from_dictionary(descriptors_to_servicers, time)`, no interceptors), calls their
methods synchronously on threads, and has no asyncio (grpc.aio) support, while this is a
`grpc.aio.ServerInterceptor` wrapping `async` handlers. So the interceptor is driven directly
here, with a `grpc.aio.ServicerContext` stand-in whose `abort` raises `AbortError` as the real
one does; one test runs the same errors through a real in-process grpc.aio server, which holds
the stand-in to what a client really receives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import MagicMock, create_autospec

import grpc
import pytest

from actlog_common.error_metadata import ERROR_TYPE_KEY, PARAM_KEY
from actlog_common.v1 import inference_pb2, inference_pb2_grpc
from inference_service.capture.spool import SpoolFull
from inference_service.errors import (
    CaptureIncomplete,
    EngineNotReady,
    InferenceError,
    InvalidRequest,
    PromptTooLong,
)
from inference_service.interceptors import ErrorMappingInterceptor

# Each domain error a client can act on, and the status it must end the call with.
DOMAIN_ERRORS = [
    (InvalidRequest("n must be between 1 and 16, got 0", param="n"),
     grpc.StatusCode.INVALID_ARGUMENT),
    (PromptTooLong("the prompt has 3000 tokens; the limit is 2048", param="prompt"),
     grpc.StatusCode.OUT_OF_RANGE),
    (EngineNotReady("the model is still loading"), grpc.StatusCode.UNAVAILABLE),
    (SpoolFull("the capture spool is full", param="capture"), grpc.StatusCode.UNAVAILABLE),
]  # fmt: skip
# Errors no client can act on: INTERNAL, with a message that says where to look, nothing more.
UNEXPECTED = [
    KeyError("cuda:0 block table"),
    RuntimeError("engine core died at /opt/vllm/engine.py:99"),
    CaptureIncomplete("capture 12: rows missing per layer {3: 2}", param="capture_layers"),
    InferenceError("a domain error nobody mapped", param="prompt"),
]
INTERNAL_DETAILS = "internal error; see the inference service log"


def ids(cases: list[Any]) -> list[str]:
    return [type(case[0] if isinstance(case, tuple) else case).__name__ for case in cases]


class Aborted(Exception):
    """How a call ended on the fake context."""

    def __init__(self, code: grpc.StatusCode, details: str, metadata: dict[str, str]) -> None:
        super().__init__(code, details)
        self.code, self.details, self.metadata = code, details, metadata


def fake_context() -> MagicMock:
    """A ServicerContext whose abort, as grpc.aio's, ends the handler by raising AbortError,
    and whose trailing metadata, as grpc.aio's, is the last given (set_trailing_metadata or
    abort's own)."""
    context = create_autospec(grpc.aio.ServicerContext, instance=True)
    state: dict[str, Any] = {"trailing": ()}

    def set_trailing(metadata: Any) -> None:
        state["trailing"] = tuple(metadata)

    async def abort(code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()):
        if trailing_metadata:
            state["trailing"] = tuple(trailing_metadata)
        context.aborted = Aborted(code, details, dict(state["trailing"]))
        raise grpc.aio.AbortError()

    context.set_trailing_metadata.side_effect = set_trailing
    context.abort.side_effect = abort
    return context


def intercepted(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handler

    details = create_autospec(grpc.HandlerCallDetails, instance=True)
    return asyncio.run(ErrorMappingInterceptor().intercept_service(continuation, details))


def failing_unary(exc: BaseException) -> grpc.RpcMethodHandler:
    async def behaviour(request: Any, context: Any) -> Any:
        raise exc

    return grpc.unary_unary_rpc_method_handler(behaviour)


def failing_stream(exc: BaseException) -> grpc.RpcMethodHandler:
    """A stream that sends one message, then fails (as a generation can mid-way)."""

    async def behaviour(request: Any, context: Any) -> AsyncIterator[Any]:
        yield "first"
        raise exc

    return grpc.unary_stream_rpc_method_handler(behaviour)


def run_unary(exc: BaseException) -> Aborted:
    handler, context = intercepted(failing_unary(exc)), fake_context()

    async def call() -> None:
        await handler.unary_unary(object(), context)

    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(call())
    return context.aborted


def run_stream(exc: BaseException) -> tuple[list[Any], Aborted]:
    handler, context = intercepted(failing_stream(exc)), fake_context()
    sent: list[Any] = []

    async def call() -> None:
        async for item in handler.unary_stream(object(), context):
            sent.append(item)

    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(call())
    return sent, context.aborted


@pytest.mark.parametrize(("exc", "code"), DOMAIN_ERRORS, ids=ids(DOMAIN_ERRORS))
def test_a_domain_error_ends_a_unary_call_with_its_status_name_and_field(exc, code) -> None:
    aborted = run_unary(exc)
    assert (aborted.code, aborted.details) == (code, str(exc))
    assert aborted.metadata[ERROR_TYPE_KEY] == type(exc).__name__
    assert aborted.metadata.get(PARAM_KEY) == exc.param


@pytest.mark.parametrize(("exc", "code"), DOMAIN_ERRORS, ids=ids(DOMAIN_ERRORS))
def test_a_domain_error_mid_stream_ends_it_the_same_way(exc, code) -> None:
    sent, aborted = run_stream(exc)
    assert sent == ["first"]
    assert (aborted.code, aborted.details) == (code, str(exc))
    assert aborted.metadata[ERROR_TYPE_KEY] == type(exc).__name__
    assert aborted.metadata.get(PARAM_KEY) == exc.param


@pytest.mark.parametrize("exc", UNEXPECTED, ids=ids(UNEXPECTED))
@pytest.mark.parametrize("kind", ["unary", "stream"])
def test_anything_else_is_internal_and_names_nothing_inside(exc, kind, caplog) -> None:
    aborted = run_unary(exc) if kind == "unary" else run_stream(exc)[1]
    assert (aborted.code, aborted.details) == (grpc.StatusCode.INTERNAL, INTERNAL_DETAILS)
    assert aborted.metadata == {}
    # The class and message go to the service's log instead.
    assert str(exc.args[0]) in caplog.text and type(exc).__name__ in caplog.text


def test_an_abort_the_servicer_made_itself_passes_through() -> None:
    """A handler that aborts on its own (AbortError) keeps its status: no second abort."""

    async def behaviour(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")

    handler, context = intercepted(grpc.unary_unary_rpc_method_handler(behaviour)), fake_context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(handler.unary_unary(object(), context))
    assert context.abort.await_count == 1
    assert context.aborted.code == grpc.StatusCode.PERMISSION_DENIED


def test_unknown_methods_stay_unknown() -> None:
    """No handler (an unknown method) is passed on as None, so gRPC answers UNIMPLEMENTED."""

    async def continuation(details: grpc.HandlerCallDetails) -> None:
        return None

    details = create_autospec(grpc.HandlerCallDetails, instance=True)
    assert asyncio.run(ErrorMappingInterceptor().intercept_service(continuation, details)) is None


class FailingServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def GetModelInfo(self, request, context):  # noqa: N802 (gRPC method name)
        raise self.exc

    async def Generate(self, request, context):  # noqa: N802
        yield inference_pb2.GenerateResponse(delta=inference_pb2.TokenDelta(text="first"))
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [DOMAIN_ERRORS[-1], (RuntimeError("engine core died"), grpc.StatusCode.INTERNAL)],
    ids=["SpoolFull", "RuntimeError"],
)
def test_a_client_receives_what_the_fake_context_recorded(exc, code) -> None:
    """Over a real grpc.aio server: the status, details and trailing metadata the tests above
    read from the fake context are what a client's AioRpcError carries, unary and streamed."""

    async def scenario() -> list[grpc.aio.AioRpcError]:
        server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
        inference_pb2_grpc.add_InferenceServicer_to_server(FailingServicer(exc), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        errors = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = inference_pb2_grpc.InferenceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as unary:
                    await stub.GetModelInfo(inference_pb2.ModelInfoRequest(), timeout=10)
                errors.append(unary.value)
                received = []
                with pytest.raises(grpc.aio.AioRpcError) as streamed:
                    async for message in stub.Generate(inference_pb2.GenerateRequest(), timeout=10):
                        received.append(message.delta.text)
                assert received == ["first"]
                errors.append(streamed.value)
        finally:
            await server.stop(None)
        return errors

    expected = run_unary(exc)
    for error in asyncio.run(scenario()):
        assert (error.code(), error.details()) == (code, expected.details)
        trailing = {k: v for k, v in error.trailing_metadata() if k.startswith("actlog-")}
        assert trailing == expected.metadata
