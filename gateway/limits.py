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
                f"too many requests in flight (limit {self.limit}); retry shortly", 429
            )
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
                GatewayError("Incorrect API key provided.", 401, code="invalid_api_key")
            )
            await response(scope, receive, send)
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        if not declared.isdigit():
            # A chunked body has no declared size: read it here (it is at most
            # max_body_bytes), so one too large is a 413, not a parse error of a cut body.
            body = await self._read_capped(receive)
            if body is None:
                await self._too_large(scope, receive, send)
                return
            await self.app(scope, _replay(body, receive), send)
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

    async def _read_capped(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it grows past max_body_bytes."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)  # the client went away: the app will see it too
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # As bytes: compare_digest refuses str with non-ASCII characters.
        given = token.strip().encode("utf-8", "surrogateescape")
        return any(hmac.compare_digest(given, key.encode()) for key in self.keys)

    async def _too_large(self, scope: Scope, receive: Receive, send: Any) -> None:
        response = error_response(
            GatewayError(f"request body is larger than {self.max_body_bytes} bytes", 413)
        )
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over `body` once, then what the connection says next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
