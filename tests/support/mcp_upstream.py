"""A small upstream MCP server ("the CRM's tools") on 127.0.0.1, built with the official
`mcp` SDK's server side, for the MCP gateway's tests.

It requires its own platform's access token on every request (`verify` maps a token to
its owner, or None: 401), and records what it saw: each HTTP request's headers, and each
tool call with its arguments and the token's owner. Tools:

- `get_deal` (readOnlyHint), `update_deal` (no hints: a write), `delete_deal`
  (destructiveHint);
- `read_email` (readOnlyHint): an HTML mail with a `display:none` injection.

It runs under uvicorn in a thread of the test process."""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support.platform import MAIL_HTML, Platform

_ID = {"deal_id": {"type": "string", "description": "The deal's id."}}


@dataclass(frozen=True)
class SeenRequest:
    headers: dict[str, str]  # lower-case names
    user: str | None  # whose platform token it carried; None: refused with 401


@dataclass(frozen=True)
class ToolCall:
    tool: str
    arguments: dict[str, Any]
    headers: dict[str, str]
    user: str


@dataclass
class McpUpstream:
    url: str
    requests: list[SeenRequest] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)

    def calls_to(self, tool: str) -> list[ToolCall]:
        return [c for c in self.calls if c.tool == tool]


def _schema(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": sorted(properties)}


TOOLS = [
    types.Tool(
        name="get_deal", description="Read a deal.", input_schema=_schema(**_ID),
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
    types.Tool(
        name="update_deal", description="Move a deal to another stage.",
        input_schema=_schema(**_ID, stage={"type": "string"}),
    ),
    types.Tool(
        name="delete_deal", description="Delete a deal for good.", input_schema=_schema(**_ID),
        annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=True),
    ),
    types.Tool(
        name="read_email", description="Read a mail message.",
        input_schema=_schema(message_id={"type": "string"}),
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
]  # fmt: skip


def _server(upstream: McpUpstream) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        assert ctx.request is not None
        user = str(ctx.request.scope["upstream.user"])
        arguments = dict(params.arguments or {})
        headers = {k.lower(): v for k, v in ctx.request.headers.items()}
        upstream.calls.append(ToolCall(params.name, arguments, headers, user))
        deal = arguments.get("deal_id")
        if params.name == "get_deal":
            text = f'{{"id": "{deal}", "name": "Acme renewal", "owner": "{user}"}}'
        elif params.name == "update_deal":
            text = f"deal {deal} moved to {arguments.get('stage')}"
        elif params.name == "delete_deal":
            text = f"deal {deal} deleted"
        elif params.name == "read_email":
            text = MAIL_HTML
        else:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text="no such tool")], is_error=True
            )
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server("crm-tools", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)


class _RequireToken:
    """401 without a platform token the platform vouches for; records every request."""

    def __init__(self, app: ASGIApp, upstream: McpUpstream, verify: Callable[[str], str | None]):
        self._app = app
        self._upstream = upstream
        self._verify = verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        user = None
        if scheme.lower() == "bearer" and token:
            user = await anyio.to_thread.run_sync(self._verify, token.strip())
        self._upstream.requests.append(SeenRequest(headers, user))
        if user is None:
            challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            response = JSONResponse({"error": "invalid_token"}, 401, headers=challenge)
            await response(scope, receive, send)
            return
        scope["upstream.user"] = user
        await self._app(scope, receive, send)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_mcp_upstream(verify: Callable[[str], str | None]) -> Iterator[McpUpstream]:
    """The upstream on 127.0.0.1 for the block; `verify(token)` names the token's owner."""
    port = _free_port()
    upstream = McpUpstream(f"http://127.0.0.1:{port}/mcp")
    inner = _server(upstream).streamable_http_app(stateless_http=True, json_response=True)
    config = uvicorn.Config(_RequireToken(inner, upstream, verify), host="127.0.0.1", port=port,
                            log_level="warning", ws="none", lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the MCP upstream did not start")
        time.sleep(0.02)
    try:
        yield upstream
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def upstream_of(platform: Platform) -> Iterator[McpUpstream]:
    """An upstream that accepts exactly the platform's live access tokens (it asks the
    platform whose they are), as a real tool server of that platform would."""

    def owner(token: str) -> str | None:
        me = httpx.get(platform.api_base + "/me", headers={"Authorization": f"Bearer {token}"})
        return str(me.json()["user"]) if me.status_code == 200 else None

    with running_mcp_upstream(owner) as running:
        yield running
