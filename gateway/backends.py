"""The gateway's client of the inference service (gRPC)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from actlog_common.defaults import message_size_options
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.v1 import inference_pb2, inference_pb2_grpc
from gateway.errors import from_grpc
from gateway.metrics import GatewayMetrics


class InferenceBackend:
    def __init__(
        self,
        address: str,
        max_message_bytes: int,
        timeout_s: float,
        metrics: GatewayMetrics | None = None,
        security: GrpcSecurity | None = None,
    ) -> None:
        self._metrics = metrics or GatewayMetrics()
        self._channel = (security or GrpcSecurity()).aio_channel(
            address,
            options=[
                # Spread requests over every address the name resolves to (replicas behind one
                # DNS name, e.g. `dns:///inference:50051` with compose's --scale).
                ("grpc.lb_policy_name", "round_robin"),
                # Reconnect fast when the inference service comes back after an outage.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                *message_size_options(max_message_bytes),
            ],
        )
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)
        self._timeout = timeout_s
        self._info: inference_pb2.ModelInfo | None = None

    async def close(self) -> None:
        await self._channel.close()

    async def model_info(self) -> inference_pb2.ModelInfo:
        # Fetched lazily: the gateway may start before the engine has loaded.
        if self._info is None:
            try:
                self._info = await self._stub.GetModelInfo(
                    inference_pb2.ModelInfoRequest(), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                raise from_grpc(exc) from exc
        return self._info

    async def status(self) -> dict[str, Any]:
        try:
            reply = await self._stub.GetStatus(inference_pb2.StatusRequest(), timeout=2)
        except grpc.aio.AioRpcError as exc:
            return {"status": "unavailable", "detail": exc.code().name}
        # Field by field: protobuf's JSON mapping writes 64-bit integers as strings. (The
        # worker's counters are not asked for: reading them pauses the engine.)
        fields = {}
        for field in reply.DESCRIPTOR.fields:
            if field.message_type is not None:
                continue
            value = getattr(reply, field.name)
            fields[field.name] = list(value) if _is_repeated(field) else value
        return {"status": "ok", **fields}

    async def check(self, request: inference_pb2.GenerateRequest) -> None:
        """Raise what generating `request` would be refused for, without generating it."""
        try:
            await self._stub.Check(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc) from exc

    async def stream(
        self, request: inference_pb2.GenerateRequest
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        started = time.perf_counter()
        first = True
        try:
            async for message in self._stub.Generate(request, timeout=self._timeout):
                kind = message.WhichOneof("kind")
                if first and kind == "delta" and message.delta.token_ids:
                    self._metrics.ttft.observe(time.perf_counter() - started)
                    first = False
                elif kind == "result":
                    result = message.result
                    self._metrics.observe_tokens(
                        len(result.prompt_token_ids) if result.index == 0 else 0,
                        len(result.output_token_ids),
                    )
                yield message
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc) from exc

    async def generate(
        self, request: inference_pb2.GenerateRequest
    ) -> list[inference_pb2.GenerateResult]:
        """Run one generation to the end and return its final results, one per choice."""
        results = [
            message.result
            async for message in self.stream(request)
            if message.WhichOneof("kind") == "result"
        ]
        if len(results) != max(request.sampling.n, 1):
            raise RuntimeError("the inference stream ended without all its results")
        return sorted(results, key=lambda r: r.index)


def _is_repeated(field: Any) -> bool:
    # FieldDescriptor.is_repeated is newer than the `label` it replaces.
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED
