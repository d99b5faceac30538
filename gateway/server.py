"""Runs the gateway with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import build_app
from gateway.config import GatewaySettings


def main() -> None:
    settings = GatewaySettings(_cli_parse_args=True)  # type: ignore[call-arg]
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        build_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
