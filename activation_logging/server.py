"""The original activation-logging server's ASGI app, on this stack:

    uvicorn activation_logging.server:app --host 0.0.0.0 --port 8000

serves the OpenAI-compatible gateway in this process; its lifespan attaches to storage and
inference where they answer at their configured addresses (STORAGE_ADDR, INFERENCE_ADDR, from
STORAGE_HOST/STORAGE_PORT and INFERENCE_HOST/INFERENCE_PORT) and starts, through the
launcher, those that do not, stopping what it started at shutdown. It is the one place that
runs the gateway and the launcher in one process, so it lives beside the deployment's other
entry points rather than in the client package."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from actlog.launcher import Stack, StackConfig, grpc_serving
from gateway.app import build_app
from gateway.config import GatewaySettings

logger = logging.getLogger(__name__)


def asgi_app() -> Any:
    """The gateway, whose lifespan first brings up (or finds) storage and inference."""
    config = StackConfig.from_env()
    stack = Stack(config)
    gateway = build_app(GatewaySettings(inference_addr=config.inference_addr))
    inner = gateway.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        started = []
        for name, address in (("storage", config.storage_addr),
                              ("inference", config.inference_addr)):  # fmt: skip
            if grpc_serving(address, security=stack.security):
                logger.info("%s answers at %s: attached", name, address)
                continue
            logger.info("no %s at %s: starting it", name, address)
            stack.start_service(name)
            started.append(name)
            await asyncio.to_thread(stack.wait_healthy, 900.0, (name,))
        try:
            async with inner(app):
                yield
        finally:
            for name in reversed(started):
                await asyncio.to_thread(stack.stop_service, name)

    gateway.router.lifespan_context = lifespan
    return gateway


app = asgi_app()
