"""Optional security of every gRPC connection between the services and their clients: TLS,
mutual TLS and a shared bearer token, configured by the same variables everywhere.

- `GRPC_TLS_CERT`, `GRPC_TLS_KEY`: this process's certificate chain and private key (PEM
  files). A server serves TLS with them; a client presents them (mutual TLS).
- `GRPC_TLS_CA`: the CA bundle (PEM) that signed the others' certificates. A client verifies
  the server with it (and connects with TLS whenever it is set); a server that has it
  requires and verifies client certificates.
- `GRPC_AUTH_TOKEN`: a shared secret. Servers refuse every call without
  `authorization: Bearer <token>` (UNAUTHENTICATED), except the standard health and
  reflection services, which probes use; clients send it on every call.

Nothing set: plaintext and no token, as on a single host. The same module serves the
services and the client package, so both ends read one contract.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pydantic import BaseModel, Field

AUTH_HEADER = "authorization"
# What probes and tools call without a token: liveness must not need a secret.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class GrpcSecurityFields(BaseModel):
    """The four settings, as every service's settings class has them (same names)."""

    grpc_tls_cert: str = Field("", description="PEM certificate chain: serve gRPC with TLS")
    grpc_tls_key: str = Field("", description="PEM private key of GRPC_TLS_CERT")
    grpc_tls_ca: str = Field(
        "", description="PEM CA bundle: verify peers; on a server, require client certificates"
    )
    grpc_auth_token: str = Field(
        "", description="shared bearer token required on gRPC calls (health excepted)"
    )


@dataclass(frozen=True)
class GrpcSecurity:
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    auth_token: str = ""

    @classmethod
    def of(cls, settings: GrpcSecurityFields) -> GrpcSecurity:
        """From a service's settings."""
        return cls(
            settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_tls_ca,
            settings.grpc_auth_token,
        )  # fmt: skip

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GrpcSecurity:
        env = os.environ if env is None else env
        return cls(
            tls_cert=env.get("GRPC_TLS_CERT", ""),
            tls_key=env.get("GRPC_TLS_KEY", ""),
            tls_ca=env.get("GRPC_TLS_CA", ""),
            auth_token=env.get("GRPC_AUTH_TOKEN", ""),
        )

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    def _read(self, path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    # -- servers ----------------------------------------------------------------------

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for a server (None: plaintext); mutual TLS when a CA is set."""
        if not self.tls_cert:
            return None
        if not self.tls_key:
            raise ValueError("GRPC_TLS_CERT is set but GRPC_TLS_KEY is not")
        chain = (self._read(self.tls_key), self._read(self.tls_cert))
        return grpc.ssl_server_credentials(
            [chain],
            root_certificates=self._read(self.tls_ca),
            require_client_auth=bool(self.tls_ca),
        )

    def add_port(self, server: Any, address: str) -> int:
        """Bind `address` on `server` (sync or aio), with TLS when configured."""
        credentials = self.server_credentials()
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)

    def token_ok(self, metadata: Sequence[tuple[str, Any]] | None, method: str) -> bool:
        """Whether a call may proceed: no token configured, an open service, or the token."""
        if not self.auth_token or method.startswith(OPEN_SERVICES):
            return True
        for key, value in metadata or ():
            if key == AUTH_HEADER and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() == "bearer":
                    return hmac.compare_digest(token.strip().encode(), self.auth_token.encode())
        return False

    # -- clients ----------------------------------------------------------------------

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.tls_ca),
            private_key=self._read(self.tls_key),
            certificate_chain=self._read(self.tls_cert),
        )

    def call_metadata(self) -> list[tuple[str, str]]:
        return [(AUTH_HEADER, f"Bearer {self.auth_token}")] if self.auth_token else []

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A blocking channel to `address`: TLS when configured, the token on every call."""
        if self.tls:
            channel = grpc.secure_channel(address, self.channel_credentials(), options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        if self.auth_token:
            channel = grpc.intercept_channel(channel, _SyncToken(self.call_metadata()))
        return channel

    def aio_channel(
        self, address: str, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        """An asyncio channel to `address`, configured as `channel`."""
        interceptors = _aio_token_interceptors(self.call_metadata()) if self.auth_token else None
        if self.tls:
            return grpc.aio.secure_channel(
                address, self.channel_credentials(), options=options, interceptors=interceptors
            )
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def _with_metadata(details: Any, extra: list[tuple[str, str]]) -> Any:
    metadata = grpc.aio.Metadata(*(tuple(details.metadata or ())), *extra)
    return details._replace(metadata=metadata)  # aio call details are a namedtuple


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, base: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = list(base.metadata or ()) + metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _SyncToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(_ClientCallDetails(details, self._metadata), request)

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call


class _AioTokenBase:
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_with_metadata(details, self._metadata), request)


# One class per call kind: an asyncio channel files each interceptor under the first kind it
# matches, so one class implementing all four would only ever see unary calls.
class _AioUnaryUnaryToken(_AioTokenBase, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _AioTokenBase._call


class _AioUnaryStreamToken(_AioTokenBase, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _AioTokenBase._call


class _AioStreamUnaryToken(_AioTokenBase, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _AioTokenBase._call


class _AioStreamStreamToken(_AioTokenBase, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _AioTokenBase._call


def _aio_token_interceptors(metadata: list[tuple[str, str]]) -> list[Any]:
    return [
        kind(metadata)
        for kind in (
            _AioUnaryUnaryToken, _AioUnaryStreamToken, _AioStreamUnaryToken,
            _AioStreamStreamToken,
        )
    ]  # fmt: skip


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls without the shared token (blocking servers)."""

    def __init__(self, security: GrpcSecurity) -> None:
        self._security = security

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        if self._security.token_ok(details.invocation_metadata, details.method):
            return continuation(details)
        return _refusing_handler(continuation(details))


class AioTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without the shared token (asyncio servers)."""

    def __init__(self, security: GrpcSecurity) -> None:
        self._security = security

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        if self._security.token_ok(details.invocation_metadata, details.method):
            return await continuation(details)
        return _refusing_handler(await continuation(details))


_REFUSAL = "missing or wrong bearer token (GRPC_AUTH_TOKEN)"


def _refusing_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    """A handler of the same shape as `handler` that refuses the call."""
    if handler is None:
        return None

    def refuse(request_or_iterator: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)

    async def refuse_async(request_or_iterator: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    is_async = any(
        _is_coroutine(getattr(handler, kind))
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
    )
    behaviour = refuse_async if is_async else refuse
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(behaviour, **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(behaviour, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(behaviour, **codec)
    return grpc.stream_stream_rpc_method_handler(behaviour, **codec)


def _is_coroutine(function: Any) -> bool:
    import inspect

    return function is not None and (
        inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
    )
