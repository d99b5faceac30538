"""Gateway settings: environment variables, or CLI flags of the same names."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(cli_kebab_case=True, cli_implicit_flags=True)

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    inference_addr: str = "127.0.0.1:50051"
    request_timeout_s: float = Field(600.0, description="longest a generation may take")
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    log_level: str = "INFO"
