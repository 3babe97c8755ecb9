"""A small MCP tool server to put behind ValetKey's gateway (`valetkey mcp upstreams add`).

Two tools: `get_deal` (read-only) and `delete_deal` (destructive). ValetKey lists them as
`<upstream>__get_deal` / `<upstream>__delete_deal`, decides every call, and sends this
server the platform token from its vault when the upstream names a provider — a real
tool server checks that token; this one requires `TOOLS_TOKEN` when it is set.

    python examples/mcp_upstream.py --port 8765
    valetkey mcp upstreams add crm --tenant acme --url http://127.0.0.1:8765/mcp
"""

import argparse
import os
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

DEAL = {"type": "object", "properties": {"deal_id": {"type": "string"}}, "required": ["deal_id"]}
TOOLS = [
    types.Tool(name="get_deal", description="Read a deal.", input_schema=DEAL,
               annotations=types.ToolAnnotations(read_only_hint=True)),
    types.Tool(name="delete_deal", description="Delete a deal for good.", input_schema=DEAL,
               annotations=types.ToolAnnotations(destructive_hint=True)),
]  # fmt: skip


async def list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    deal = (params.arguments or {}).get("deal_id")
    if params.name == "get_deal":
        text = f'{{"id": "{deal}", "name": "Acme renewal", "stage": "negotiation"}}'
    else:
        text = f"deal {deal} deleted"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


class RequireToken:
    """401 unless the request carries `Bearer $TOOLS_TOKEN` (when that is set)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.token:
            sent = dict(scope["headers"]).get(b"authorization", b"").decode()
            if sent != f"Bearer {self.token}":
                await JSONResponse({"error": "invalid_token"}, 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def app() -> ASGIApp:
    server = Server("crm-tools", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)
    inner = server.streamable_http_app(stateless_http=True, json_response=True)
    return RequireToken(inner, os.environ.get("TOOLS_TOKEN"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    uvicorn.run(app(), host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
