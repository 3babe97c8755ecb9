"""`/mcp` itself: the official SDK's low-level `Server` with ValetKey's two handlers, served
by its `StreamableHTTPSessionManager` in stateless mode with JSON responses — every POST
stands alone, so any worker process or node can answer any request (ValetKey nodes keep
no session state), and every request is authenticated afresh. Only POST is served: there is
no standalone SSE stream to GET (405, as the transport allows) and no session to DELETE.

The app `create_mcp_app` returns does no authentication of its own: the web layer
(`valetkey.web.mcp`) verifies the token and puts the `Authenticated` caller in the ASGI
scope under `SCOPE_KEY`; a request without one is refused (fail closed). Handlers read the
caller from the SDK's request context (`ctx.request.scope`), never from the session."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from valetkey import __version__
from valetkey.mcp.catalog import Catalog
from valetkey.mcp.gateway import Authenticated, ToolGateway
from valetkey.mcp.upstream_client import UpstreamClient

SCOPE_KEY = "valetkey.mcp.caller"
MAX_REQUEST_BODY = 1024 * 1024
INSTRUCTIONS = (
    "ValetKey's tool gateway: every tool call is checked against the user's task and the "
    "tenant's policies first. A refused call is a tool error that says why; a call held for "
    "a human's approval says where, and goes through once when called again with the same "
    "arguments after the approval."
)


def _who(ctx: ServerRequestContext[Any, Any]) -> Authenticated:
    request = ctx.request
    scope = getattr(request, "scope", None)
    found = scope.get(SCOPE_KEY) if isinstance(scope, dict) else None
    if not isinstance(found, Authenticated):  # never reached behind valetkey.web.mcp
        raise MCPError(types.INVALID_REQUEST, "not authenticated")
    return found


def build_server(gateway: ToolGateway) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=await gateway.list_tools(_who(ctx)))

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        meta: dict[str, Any] = dict(params.meta or {})
        return await gateway.call_tool(_who(ctx), params.name, params.arguments or {}, meta)

    return Server(
        "valetkey", version=__version__, title="ValetKey MCP gateway",
        instructions=INSTRUCTIONS, on_list_tools=list_tools, on_call_tool=call_tool,
    )  # fmt: skip


def gateway_from(state: Any) -> ToolGateway:
    """The gateway, wired from the web app's state (what its lifespan built)."""
    runtime = state.runtime
    settings = runtime.settings
    client = UpstreamClient(settings.gateway_timeout)
    catalog = Catalog(
        runtime.mcp_store, runtime.mcp_store, runtime.decision_point(state.oauth, None),
        state.oauth.tenant_resources, state.oauth.cache, client, runtime.clock,
    )  # fmt: skip
    return ToolGateway(
        catalog, state.authorizer, state.gateway_providers, state.gateway_connections,
        state.vault, runtime.approval_store, runtime.mcp_store, state.audit, client,
        runtime.clock, settings.issuer,
    )  # fmt: skip


@asynccontextmanager
async def mcp_lifespan(state: Any) -> AsyncIterator[None]:
    """Run the MCP gateway for the web app's lifetime (enter it in the app's lifespan,
    after the state it reads is set)."""
    manager = StreamableHTTPSessionManager(
        build_server(gateway_from(state)), stateless=True, json_response=True,
        max_request_body_size=MAX_REQUEST_BODY,
    )  # fmt: skip
    async with manager.run():
        state.mcp_manager = manager
        try:
            yield
        finally:
            state.mcp_manager = None


def create_mcp_app(state: Any) -> ASGIApp:
    """The `/mcp` ASGI app (unauthenticated: put `valetkey.web.mcp`'s wrapper in front)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        manager: StreamableHTTPSessionManager | None = getattr(state, "mcp_manager", None)
        if not isinstance(scope.get(SCOPE_KEY), Authenticated):
            await JSONResponse({"error": "not authenticated"}, 401)(scope, receive, send)
            return
        if scope["method"] != "POST":  # no standalone SSE stream, no session to end (§2.2.3)
            response = JSONResponse({"error": "use POST"}, 405, headers={"Allow": "POST"})
            await response(scope, receive, send)
            return
        if manager is None:
            await JSONResponse({"error": "the MCP gateway is not running"}, 503)(
                scope, receive, send
            )
            return
        await manager.handle_request(scope, receive, send)

    return app
