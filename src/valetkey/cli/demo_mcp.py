"""The demo's MCP part: the CRM's own MCP server (two tools, its own token required) on
127.0.0.1, and an MCP client — the official `mcp` SDK — connecting to ValetKey's `/mcp`
with the agent's ValetKey token only."""

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import mcp_types as types
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

_DEAL = {"type": "object", "properties": {"deal_id": {"type": "string"}}, "required": ["deal_id"]}
TOOLS = [
    types.Tool(name="get_deal", description="Read a deal.", input_schema=_DEAL,
               annotations=types.ToolAnnotations(read_only_hint=True)),
    types.Tool(name="delete_deal", description="Delete a deal.", input_schema=_DEAL,
               annotations=types.ToolAnnotations(destructive_hint=True)),
]  # fmt: skip


def _server() -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        deal = (params.arguments or {}).get("deal_id")
        text = (f'{{"id": "{deal}", "name": "Acme renewal", "stage": "negotiation"}}'
                if params.name == "get_deal" else f"deal {deal} deleted")  # fmt: skip
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server("crm-tools", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)


class _OwnTokenOnly:
    """The CRM's MCP server accepts only the CRM's own access tokens."""

    def __init__(self, app: ASGIApp, valid: Callable[[str], bool]) -> None:
        self._app = app
        self._valid = valid

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            if not self._valid(auth.removeprefix("Bearer ")):
                await JSONResponse({"error": "invalid_token"}, 401)(scope, receive, send)
                return
        await self._app(scope, receive, send)


@contextmanager
def crm_tools(valid: Callable[[str], bool]) -> Iterator[str]:
    """The CRM's MCP server for the block; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = _server().streamable_http_app(stateless_http=True, json_response=True)
    config = uvicorn.Config(_OwnTokenOnly(app, valid), host="127.0.0.1", port=port,
                            log_level="warning", ws="none", lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)


async def connect(url: str, token: str) -> tuple[list[str], list[tuple[str, bool, str]]]:
    """An MCP client at ValetKey's /mcp: the tools it is offered, and what two calls gave."""
    results: list[tuple[str, bool, str]] = []
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        tools = [t.name for t in (await client.list_tools()).tools]
        for name in ("crm__get_deal", "crm__delete_deal"):
            result = await client.call_tool(name, {"deal_id": "42"})
            text = " ".join(c.text for c in result.content if isinstance(c, types.TextContent))
            results.append((name, bool(result.is_error), text))
    return tools, results
