"""Inference gRPC server: a vLLM engine with capture, health and reflection."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actlog_common.defaults import (
    DRAIN_GRACE_S,
    REQUEST_GRACE_S,
    SERVER_OPTIONS,
    configure_logging,
    message_size_options,
)
from actlog_common.grpc_security import AioTokenInterceptor, GrpcSecurity
from actlog_common.parent import stop_with_launcher
from actlog_common.v1 import inference_pb2, inference_pb2_grpc
from inference_service.config import InferenceSettings
from inference_service.engine import CaptureEngine
from inference_service.errors import StartupError
from inference_service.interceptors import ErrorMappingInterceptor
from inference_service.metrics import serve_metrics
from inference_service.servicer import InferenceServicer

logger = logging.getLogger("inference_service")

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


async def serve(settings: InferenceSettings) -> None:
    engine = CaptureEngine(settings)
    security = GrpcSecurity.of(settings)
    server = grpc.aio.server(
        interceptors=[AioTokenInterceptor(security), ErrorMappingInterceptor()],
        options=[*message_size_options(settings.grpc_max_message_bytes), *SERVER_OPTIONS],
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(engine), server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.inference_host}:{settings.inference_port}"
    try:
        port = security.add_port(server, address)
    except (RuntimeError, OSError, ValueError) as error:
        raise StartupError(f"inference could not bind {address}: {error}") from error
    if port == 0:
        raise StartupError(f"inference could not bind {address} (is another server on it?)")
    # Health answers NOT_SERVING while the engine loads, so probes can tell "starting" from "down".
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    serve_metrics(engine, settings.inference_host, settings.inference_metrics_port)
    await server.start()
    logger.info("inference listening on %s:%d (loading model)", settings.inference_host, port)

    try:
        await engine.start()
    except BaseException as exc:
        if not isinstance(exc, StartupError):
            logger.exception("the engine failed to start")
        await server.stop(None)
        await engine.stop(0)
        raise
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    logger.info("inference ready on %s:%d", settings.inference_host, port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    logger.info("shutting down: draining requests and captures")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(REQUEST_GRACE_S)
    await engine.stop(DRAIN_GRACE_S)


def main() -> None:
    settings = InferenceSettings(_cli_parse_args=True)  # type: ignore[call-arg]
    configure_logging(settings.log_level)
    stop_with_launcher()
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        # One line that says what to change, not a traceback.
        logger.error("%s", exc)
        sys.exit(f"inference: {exc}")


if __name__ == "__main__":
    main()
