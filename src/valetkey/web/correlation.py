"""`X-Correlation-Id`: taken from the request when well-formed, else minted; always echoed.

A pure ASGI middleware (Starlette's BaseHTTPMiddleware costs a task per request).
"""

import re
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-correlation-id"
SCOPE_KEY = "valetkey.correlation_id"
_VALID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


def new_correlation_id() -> str:
    return "cor_" + secrets.token_hex(12)


def correlation_id(scope: Scope | Any) -> str:
    value = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    return str(value) if value else new_correlation_id()


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = None
        for name, raw in scope["headers"]:
            if name == HEADER:
                value = raw if _VALID.match(raw) else None
                break
        cid = value.decode() if value else new_correlation_id()
        scope[SCOPE_KEY] = cid
        encoded = cid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, send_with_id)
