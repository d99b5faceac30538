"""Runs the gateway with uvicorn."""

from __future__ import annotations

import uvicorn

from actlog_common.defaults import GATEWAY_GRACE_S, configure_logging
from actlog_common.parent import stop_with_launcher
from gateway.app import build_app
from gateway.config import GatewaySettings


def main() -> None:
    settings = GatewaySettings(_cli_parse_args=True)  # type: ignore[call-arg]
    configure_logging(settings.log_level)
    stop_with_launcher()
    uvicorn.run(
        build_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(GATEWAY_GRACE_S),
    )


if __name__ == "__main__":
    main()
