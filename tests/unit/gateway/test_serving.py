"""The gateway's HTTP contract, on a stand-in for the inference service: no vLLM, no gRPC
server, seconds in all (as vLLM's and KServe's suites test their servers).

The backend is `create_autospec(InferenceBackend)`: a method the gateway calls that the
real backend lacks, or a call with the wrong arguments, fails here. It fails as the real one
does: every gRPC error reaches the gateway as `from_grpc(AioRpcError)`, the GatewayError
InferenceBackend raises (test_the_real_backend_raises_what_the_stand_in_raises holds the
two together).

Expected statuses and types are written out here, not read from gateway/errors.py, so a
wrong entry in the gateway's tables fails these tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from unittest.mock import MagicMock, create_autospec

import grpc
import httpx
import openai.types
import openai.types.chat
import pytest
from fastapi.testclient import TestClient

from actlog_common.error_metadata import ERROR_TYPE_KEY, PARAM_KEY
from actlog_common.v1 import inference_pb2, inference_pb2_grpc
from gateway.app import build_app
from gateway.backends import InferenceBackend
from gateway.config import GatewaySettings
from gateway.errors import GatewayError, error_body, from_grpc

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
INFO = inference_pb2.ModelInfo(
    model=MODEL, num_layers=30, hidden_size=576, dtype="float32", max_model_len=2048,
    default_layers=[30], recommended_layers=[14, 18, 22, 26],
)  # fmt: skip
PROMPT_HASH = "9f" * 32
RECORD_ID = "0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6"

COMPLETION = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 3}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]}

# What a client must get for each gRPC status the inference service can end a call with.
GRPC_TO_CLIENT: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "BadRequestError"),
    grpc.StatusCode.NOT_FOUND: (404, "NotFoundError"),
    grpc.StatusCode.OUT_OF_RANGE: (413, "Request Entity Too Large"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "Too Many Requests"),
    grpc.StatusCode.UNAVAILABLE: (503, "ServiceUnavailableError"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "Gateway Timeout"),
    **{
        code: (500, "InternalServerError")
        for code in (
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.ALREADY_EXISTS,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.DATA_LOSS,
            grpc.StatusCode.UNAUTHENTICATED,
        )
    },
}
RETRY_STATUSES = {429, 503}


def test_the_table_covers_every_grpc_status_but_ok() -> None:
    assert set(GRPC_TO_CLIENT) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


# --- stand-ins -------------------------------------------------------------------------------


def rpc_error(
    code: grpc.StatusCode, details: str = "details from the inference service", **trailing: str
) -> grpc.aio.AioRpcError:
    """The error a gRPC call to the inference service ends with."""
    return grpc.aio.AioRpcError(
        code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*trailing.items()),
        details=details,
    )


def failure(code: grpc.StatusCode, **trailing: str) -> GatewayError:
    """What InferenceBackend raises when its call ends with `code`."""
    return from_grpc(rpc_error(code, **trailing))


def result(text: str = " Paris.", index: int = 0) -> inference_pb2.GenerateResult:
    return inference_pb2.GenerateResult(
        text=text, prompt_token_ids=[504, 3575, 282, 4649, 314], output_token_ids=[7042, 30],
        finish_reason="stop", prompt_hash=PROMPT_HASH, record_id=RECORD_ID, layers=[30],
        model=MODEL, index=index, prompt="The capital of France is",
    )  # fmt: skip


def delta(text: str, index: int = 0) -> inference_pb2.GenerateResponse:
    return inference_pb2.GenerateResponse(
        delta=inference_pb2.TokenDelta(token_ids=[7042], text=text, index=index)
    )


def done(res: inference_pb2.GenerateResult) -> inference_pb2.GenerateResponse:
    return inference_pb2.GenerateResponse(result=res)


def streaming(*steps: inference_pb2.GenerateResponse | Exception) -> Callable[..., Any]:
    """A side effect for backend.stream: yields the messages, raises the exceptions."""

    async def stream(request: inference_pb2.GenerateRequest) -> AsyncIterator[Any]:
        for step in steps:
            if isinstance(step, Exception):
                raise step
            yield step

    return stream


@pytest.fixture
def backend() -> MagicMock:
    """An inference backend serving MODEL, answering " Paris." to every prompt."""
    mock = create_autospec(InferenceBackend, instance=True)
    mock.model_info.return_value = INFO
    mock.generate.return_value = [result()]
    mock.stream.side_effect = streaming(delta(" Paris"), delta("."), done(result()))
    return mock


def settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(**{"max_concurrent_requests": 8, "api_keys": "", **overrides})


@contextlib.contextmanager
def gateway(backend: MagicMock, **overrides: Any) -> Iterator[TestClient]:
    app = build_app(settings(**overrides), backend)
    # An unexpected exception is answered 500 here, as uvicorn answers it, not re-raised.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(backend: MagicMock) -> Iterator[TestClient]:
    with gateway(backend) as c:
        yield c


def events(reply: httpx.Response) -> list[Any]:
    """The data of each server-sent event, JSON decoded ("[DONE]" as is)."""
    assert reply.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in reply.text.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def assert_error(reply: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_ and error["message"]
    if status in RETRY_STATUSES:
        assert reply.headers["Retry-After"] == "1"
    else:
        assert "Retry-After" not in reply.headers
    return error


# --- success shapes ------------------------------------------------------------------------------


def test_a_completion_is_what_the_openai_client_parses(client, backend) -> None:
    reply = client.post("/v1/completions", json=COMPLETION)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    completion = openai.types.Completion.model_validate(body)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.model == MODEL
    [choice] = completion.choices
    assert (choice.index, choice.text, choice.finish_reason) == (0, " Paris.", "stop")
    assert completion.usage.model_dump() == {
        "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
        "completion_tokens_details": None, "prompt_tokens_details": None,
    }  # fmt: skip
    assert body["activations"] == [
        {"prompt_hash": PROMPT_HASH, "record_ids": [RECORD_ID], "layers": [30]}
    ]
    # The request the inference service got.
    [request] = backend.generate.await_args.args
    assert request.prompt == COMPLETION["prompt"] and request.sampling.max_tokens == 3
    assert request.request_id.startswith(completion.id)


def test_a_chat_completion_is_what_the_openai_client_parses(client, backend) -> None:
    reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200, reply.text
    chat = openai.types.chat.ChatCompletion.model_validate(reply.json())
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    [choice] = chat.choices
    assert (choice.message.role, choice.message.content) == ("assistant", " Paris.")
    assert choice.finish_reason == "stop"
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (5, 2)
    [request] = backend.generate.await_args.args
    assert [(m.role, m.content) for m in request.chat.messages] == [("user", "Capital of France?")]


def test_a_streamed_completion_is_chunks_then_done(client) -> None:
    reply = client.post("/v1/completions", json={**COMPLETION, "stream": True})
    assert reply.status_code == 200, reply.text
    *chunks, last = events(reply)
    assert last == "[DONE]"
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1
    assert "".join(c["choices"][0]["text"] for c in chunks) == " Paris."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["activations"][0]["record_ids"] == [RECORD_ID]


# --- errors: one type per status, wherever the error starts --------------------------------------

WHERE = ["completion", "chat", "completion-stream", "chat-stream"]


def post(client: TestClient, where: str) -> httpx.Response:
    path, body = {
        "completion": ("/v1/completions", COMPLETION),
        "chat": ("/v1/chat/completions", CHAT),
        "completion-stream": ("/v1/completions", {**COMPLETION, "stream": True}),
        "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True}),
    }[where]
    return client.post(path, json=body)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("code", list(GRPC_TO_CLIENT), ids=lambda c: c.name)
def test_a_grpc_error_before_any_token_is_an_http_error(
    backend, client, code: grpc.StatusCode, where: str
) -> None:
    """Whole or streamed: a generation that fails before its first message is answered with
    the HTTP status and OpenAI type for its gRPC status (no 200 has started yet)."""
    backend.generate.side_effect = failure(code)
    backend.stream.side_effect = streaming(failure(code))
    status, type_ = GRPC_TO_CLIENT[code]
    error = assert_error(post(client, where), status, type_)
    assert error["code"] == str(status)


@pytest.mark.parametrize("where", ["completion-stream", "chat-stream"])
@pytest.mark.parametrize("code", list(GRPC_TO_CLIENT), ids=lambda c: c.name)
def test_a_grpc_error_mid_stream_is_the_last_event_before_done(
    backend, client, code: grpc.StatusCode, where: str
) -> None:
    """After the 200 has started, the error comes as an event of the same shape, its type and
    code those the HTTP error would have had, and the stream still ends with [DONE]."""
    backend.stream.side_effect = streaming(delta(" Par"), failure(code))
    status, type_ = GRPC_TO_CLIENT[code]
    reply = post(client, where)
    assert reply.status_code == 200, reply.text
    *chunks, error_event, last = events(reply)
    assert last == "[DONE]"
    assert chunks and all("error" not in c for c in chunks)
    error = error_event["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (type_, str(status)) and error["message"]


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN])
def test_a_500_does_not_pass_on_the_services_details(backend, client, code) -> None:
    backend.generate.side_effect = from_grpc(rpc_error(code, "KeyError at engine.py:321"))
    error = assert_error(post(client, "completion"), 500, "InternalServerError")
    assert "engine.py" not in error["message"]


def test_a_lost_inference_connection_is_503_without_its_addresses(backend, client) -> None:
    backend.generate.side_effect = from_grpc(
        rpc_error(grpc.StatusCode.UNAVAILABLE, "ipv4:127.0.0.1:50051: Connection refused")
    )
    error = assert_error(post(client, "completion"), 503, "ServiceUnavailableError")
    assert "127.0.0.1" not in error["message"] and "retry" in error["message"]


def test_the_services_own_refusal_keeps_its_message_and_field(backend, client) -> None:
    backend.generate.side_effect = from_grpc(
        rpc_error(
            grpc.StatusCode.UNAVAILABLE, "capture spool full; retry or send capture: false",
            **{ERROR_TYPE_KEY: "SpoolFull", PARAM_KEY: "capture"},
        )
    )  # fmt: skip
    error = assert_error(post(client, "completion"), 503, "ServiceUnavailableError")
    assert error["message"] == "capture spool full; retry or send capture: false"
    assert error["param"] == "capture"


def test_an_invalid_argument_names_the_field_at_fault(backend, client) -> None:
    backend.generate.side_effect = from_grpc(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "layer 999 out of range",
                  **{PARAM_KEY: "capture_layers"})
    )  # fmt: skip
    error = assert_error(post(client, "completion"), 400, "BadRequestError")
    assert (error["message"], error["param"]) == ("layer 999 out of range", "capture_layers")


def test_an_unknown_model_is_404_not_found_and_reaches_no_generation(client, backend) -> None:
    for where in WHERE:
        reply = client.post(
            "/v1/chat/completions" if "chat" in where else "/v1/completions",
            json={**(CHAT if "chat" in where else COMPLETION), "model": "gpt-4",
                  "stream": where.endswith("stream")},
        )  # fmt: skip
        error = assert_error(reply, 404, "NotFoundError")
        assert (error["param"], error["code"]) == ("model", "model_not_found")
        assert "gpt-4" in error["message"] and MODEL in error["message"]
    backend.generate.assert_not_awaited()
    backend.stream.assert_not_called()


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {**COMPLETION, "n": 0}, "n"),
        ("/v1/completions", {**COMPLETION, "temperature": 9}, "temperature"),
        ("/v1/completions", {"model": MODEL}, "prompt"),
        ("/v1/chat/completions", {**CHAT, "messages": []}, "messages"),
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard"}]}, "messages.0.role"),
    ],
)
def test_a_request_that_fails_validation_is_400_bad_request(client, backend, path, body, param):
    """400, not FastAPI's 422, as OpenAI's API and vLLM's server answer; `param` names the
    first field at fault."""
    error = assert_error(client.post(path, json=body), 400, "BadRequestError")
    assert error["param"] == param
    backend.generate.assert_not_awaited()


def test_one_error_type_per_status_wherever_the_error_starts(backend) -> None:
    """Each status has one type whether a route, a guard, FastAPI, the limiter or the
    inference service raised it (they used to differ: NotFoundError, not_found_error,
    NotFound)."""
    seen: dict[int, set[str]] = {}
    with gateway(backend, max_body_bytes=2000, api_keys="k-one") as client:
        auth = {"Authorization": "Bearer k-one"}

        def record(reply: httpx.Response) -> None:
            seen.setdefault(reply.status_code, set()).add(reply.json()["error"]["type"])

        record(client.post("/v1/completions", json=COMPLETION))  # 401: the API-key guard
        record(client.post("/v1/completions", json={**COMPLETION, "n": 0}, headers=auth))
        record(client.post("/v1/completions", json={**COMPLETION, "prompt": ""}, headers=auth))
        record(client.post("/v1/completions", json={**COMPLETION, "model": "x"}, headers=auth))
        record(client.get("/v1/no-such-route", headers=auth))
        record(client.put("/v1/completions", json=COMPLETION, headers=auth))  # 405
        record(client.post("/v1/completions", headers=auth,
                           json={**COMPLETION, "prompt": "x" * 3000}))  # fmt: skip
        backend.generate.side_effect = RuntimeError("a bug")
        record(client.post("/v1/completions", json=COMPLETION, headers=auth))
        for code in GRPC_TO_CLIENT:
            backend.generate.side_effect = failure(code)
            record(client.post("/v1/completions", json=COMPLETION, headers=auth))
    with gateway(backend, max_concurrent_requests=0) as client:
        record(client.post("/v1/completions", json=COMPLETION))
    assert seen == {
        400: {"BadRequestError"},
        401: {"Unauthorized"},
        404: {"NotFoundError"},
        405: {"Method Not Allowed"},
        413: {"Request Entity Too Large"},
        429: {"Too Many Requests"},
        500: {"InternalServerError"},
        503: {"ServiceUnavailableError"},
        504: {"Gateway Timeout"},
    }


def test_an_unexpected_exception_is_a_500_that_names_nothing_inside(backend, client) -> None:
    backend.generate.side_effect = ZeroDivisionError("secret internals")
    error = assert_error(post(client, "completion"), 500, "InternalServerError")
    assert "ZeroDivision" not in error["message"] and "secret" not in error["message"]


def test_a_streamed_error_is_the_same_body_as_a_response() -> None:
    exc = GatewayError("the model is loading", 503, param="model")
    body = error_body(exc)
    assert error_body(exc, stream=True) == f"data: {body}\n\n"
    assert json.loads(body) == {
        "error": {"message": "the model is loading", "type": "ServiceUnavailableError",
                  "param": "model", "code": "503"}
    }  # fmt: skip


def test_the_real_backend_raises_what_the_stand_in_raises() -> None:
    """InferenceBackend turns a failed call into from_grpc's GatewayError, so the stand-in's
    `failure(code)` is what the gateway meets in production."""

    async def scenario() -> tuple[GatewayError, GatewayError]:
        real = InferenceBackend("127.0.0.1:1", 1 << 20, 5.0)
        stub = create_autospec(inference_pb2_grpc.InferenceStub(real._channel), instance=True)
        error = rpc_error(grpc.StatusCode.OUT_OF_RANGE, "prompt too long", **{PARAM_KEY: "x"})
        stub.GetModelInfo.side_effect = error

        async def failing_stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            raise error
            yield  # an async generator, as a streaming call is

        stub.Generate.side_effect = failing_stream
        real._stub = stub
        try:
            with pytest.raises(GatewayError) as unary:
                await real.model_info()
            with pytest.raises(GatewayError) as streamed:
                await real.generate(inference_pb2.GenerateRequest(prompt="hi"))
        finally:
            await real.close()
        return unary.value, streamed.value

    for raised in asyncio.run(scenario()):
        assert (raised.status, raised.message, raised.param) == (413, "prompt too long", "x")


# --- the concurrency limit -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def async_gateway(backend: MagicMock, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on `backend`, for requests that must be in flight together."""
    app = build_app(settings(**overrides), backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


async def within(awaitable: Any, seconds: float = 10) -> Any:
    """`awaitable`, or a failure (not a hung suite) if the gateway never gets there."""
    return await asyncio.wait_for(awaitable, seconds)


class Gate:
    """Generations that start, then wait for `open()`; `started` counts them in."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.all_started = asyncio.Event()
        self.opened = asyncio.Event()

    def arrived(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all_started.set()

    async def generate(self, request: inference_pb2.GenerateRequest) -> list[Any]:
        self.arrived()
        await self.opened.wait()
        return [result()]

    async def stream(self, request: inference_pb2.GenerateRequest) -> AsyncIterator[Any]:
        yield delta(" Paris")
        self.arrived()  # the gateway came back for more: the 200 stream is under way
        await self.opened.wait()
        yield done(result())


def test_beyond_the_limit_a_request_gets_429_at_once_and_the_slots_come_back(backend) -> None:
    """With `max_concurrent_requests` generations in flight, the next request is refused at
    once (429, Retry-After, never reaching inference) rather than queued; once they end, their
    slots serve new requests."""

    async def scenario() -> None:
        gate = Gate(expected=2)
        backend.generate.side_effect = gate.generate
        async with async_gateway(backend, max_concurrent_requests=2) as client:
            held = [
                asyncio.create_task(client.post("/v1/completions", json=COMPLETION))
                for _ in range(2)
            ]
            await within(gate.all_started.wait())
            refused = await within(client.post("/v1/chat/completions", json=CHAT))
            assert_error(refused, 429, "Too Many Requests")
            assert "limit 2" in refused.json()["error"]["message"]
            assert backend.generate.await_count == 2  # the refused one never reached inference
            gate.opened.set()
            assert [r.status_code for r in await within(asyncio.gather(*held))] == [200, 200]
            backend.generate.side_effect = None
            again = await asyncio.gather(
                *(client.post("/v1/completions", json=COMPLETION) for _ in range(2))
            )
            assert [r.status_code for r in again] == [200, 200]

    asyncio.run(scenario())


def test_a_stream_holds_its_slot_until_its_last_chunk(backend) -> None:
    async def scenario() -> None:
        gate = Gate(expected=1)
        backend.stream.side_effect = gate.stream
        async with async_gateway(backend, max_concurrent_requests=1) as client:
            stream = asyncio.create_task(
                client.post("/v1/completions", json={**COMPLETION, "stream": True})
            )
            await within(gate.all_started.wait())
            assert_error(await within(client.post("/v1/completions", json=COMPLETION)), 429,
                         "Too Many Requests")  # fmt: skip
            gate.opened.set()
            finished = await within(stream)
            assert finished.status_code == 200 and events(finished)[-1] == "[DONE]"
            assert (await client.post("/v1/completions", json=COMPLETION)).status_code == 200

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("where", "when"),
    [*((where, "before-first-token") for where in WHERE),
     ("completion-stream", "mid-stream"), ("chat-stream", "mid-stream")],
)  # fmt: skip
def test_a_failed_generation_gives_its_slot_back(backend, where: str, when: str) -> None:
    """With one slot, a request after a failed one is served: failures do not leak slots."""
    code = grpc.StatusCode.UNAVAILABLE
    backend.generate.side_effect = failure(code)
    first = [failure(code)] if when == "before-first-token" else [delta("x"), failure(code)]
    backend.stream.side_effect = streaming(*first)
    with gateway(backend, max_concurrent_requests=1) as client:
        failed = post(client, where)
        if when == "mid-stream":
            assert failed.status_code == 200 and "error" in events(failed)[-2]
        else:
            assert_error(failed, 503, "ServiceUnavailableError")
        backend.generate.side_effect = None
        backend.stream.side_effect = streaming(delta(" Paris"), done(result()))
        assert post(client, where).status_code == 200


@pytest.mark.parametrize("layers", [[True], [False, 3], [1.0], ["3"]])
def test_capture_layers_are_integers_not_booleans_or_strings(client, backend, layers) -> None:
    reply = client.post("/v1/completions", json={**COMPLETION, "capture_layers": layers})
    error = assert_error(reply, 400, "BadRequestError")
    assert "capture_layers" in (error["param"] or error["message"])
    backend.generate.assert_not_called()
