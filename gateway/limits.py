"""Request limits enforced before any work: API keys, body size, concurrency."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError, error_response


class ConcurrencyLimit:
    """Counts generations in flight; beyond the limit new ones get 429 at once (no queueing,
    so clients can back off and retry as OpenAI's SDKs do)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> None:
        if self.active >= self.limit:
            raise GatewayError(
                f"too many requests in flight (limit {self.limit}); retry shortly",
                status=429, type_="rate_limit_error",
            )  # fmt: skip
        self.active += 1

    def release(self) -> None:
        self.active -= 1


class GuardMiddleware:
    """API-key check and body-size cap, as plain ASGI so oversized bodies are never buffered."""

    def __init__(self, app: ASGIApp, keys: frozenset[str], max_body_bytes: int) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope["headers"]}
        if self.keys and not self._authorized(headers.get("authorization", "")):
            response = error_response(
                "Incorrect API key provided.", 401, "authentication_error",
                code="invalid_api_key",
            )  # fmt: skip
            await response(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0
        too_large = False

        async def counted_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except _BodyTooLarge:
            await self._too_large(scope, receive, send)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        token = token.strip()
        return any(hmac.compare_digest(token, key) for key in self.keys)

    async def _too_large(self, scope: Scope, receive: Receive, send: Any) -> None:
        response = error_response(
            f"request body is larger than {self.max_body_bytes} bytes", 413,
            "invalid_request_error",
        )  # fmt: skip
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass
