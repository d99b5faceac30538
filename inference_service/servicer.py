"""gRPC servicer: protobuf -> domain -> engine -> protobuf. Errors are mapped by the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from actlog_common.v1 import inference_pb2, inference_pb2_grpc
from inference_service.engine import CaptureEngine
from inference_service.types import GenerationRequest


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, engine: CaptureEngine) -> None:
        self._engine = engine

    async def Generate(  # noqa: N802 (gRPC method name)
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        req = GenerationRequest.from_pb(request)
        async for item in self._engine.generate(req):
            yield item.to_pb()

    async def Check(  # noqa: N802
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.CheckResponse:
        await self._engine.check(GenerationRequest.from_pb(request))
        return inference_pb2.CheckResponse()

    async def GetModelInfo(  # noqa: N802
        self, request: inference_pb2.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ModelInfo:
        return self._engine.require_ready().to_pb()

    async def DeadLetters(  # noqa: N802
        self, request: inference_pb2.DeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.DeadLetterList:
        retried: list[str] = []
        if request.retry_all or request.retry:
            retried = self._engine.sink.retry_dead_letters(list(request.retry) or None)
        return inference_pb2.DeadLetterList(
            dead_letters=[
                inference_pb2.DeadLetter(record_id=rid, reason=reason)
                for rid, reason in self._engine.spool.dead_letters()
            ],
            retried=retried,
        )

    async def GetStatus(  # noqa: N802
        self, request: inference_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ServiceStatus:
        status = inference_pb2.ServiceStatus(**self._engine.status())
        if request.worker_counters:
            status.worker.CopyFrom(
                inference_pb2.WorkerCounters(**await self._engine.worker_counters())
            )
        return status
