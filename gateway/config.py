"""Gateway settings: environment variables, or CLI flags of the same names."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from actlog_common.defaults import GATEWAY_PORT, INFERENCE_ADDR
from actlog_common.grpc_security import GrpcSecurityFields


class GatewaySettings(BaseSettings, GrpcSecurityFields):
    model_config = SettingsConfigDict(cli_kebab_case=True, cli_implicit_flags=True)

    gateway_host: str = Field("127.0.0.1", description="address the HTTP server binds")
    gateway_port: int = Field(
        GATEWAY_PORT, description="HTTP port: the API, /health, /health/live and /metrics"
    )
    inference_addr: str = Field(INFERENCE_ADDR, description="the inference service to call")
    request_timeout_s: float = Field(600.0, description="longest a generation may take")
    api_keys: str = Field("", description="comma-separated keys; empty = no authentication")
    api_keys_file: str = Field("", description="file with one API key per line")
    max_tokens_limit: int = Field(4096, description="ceiling on max_tokens per request")
    max_concurrent_requests: int = Field(256, description="beyond this, 429")
    max_body_bytes: int = Field(4 * 1024 * 1024, description="larger request bodies get 413")
    max_batch_prompts: int = Field(64, description="prompts per /v1/completions request")
    grpc_max_message_bytes: int = Field(
        64 * 1024 * 1024, description="largest gRPC message sent or received"
    )
    log_level: str = Field("INFO", description="Python logging level")

    def keys(self) -> frozenset[str]:
        keys = {k.strip() for k in self.api_keys.split(",") if k.strip()}
        if self.api_keys_file:
            with open(self.api_keys_file) as f:
                keys |= {line.strip() for line in f if line.strip()}
        return frozenset(keys)
