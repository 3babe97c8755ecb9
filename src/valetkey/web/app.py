"""`create_app(settings)`: the ASGI application. `app_from_env` is uvicorn's factory."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response
from starlette.routing import Route

from valetkey import __version__
from valetkey.audit.writer import BatchingAuditWriter
from valetkey.config import Settings
from valetkey.gateway import proxy
from valetkey.gateway.calls import ProviderDirectory
from valetkey.mcp import mcp_lifespan
from valetkey.runtime import Runtime
from valetkey.vault.platform import token_timeout
from valetkey.vault.refresh import TokenVault
from valetkey.web import (
    authorize,
    authzen,
    connections,
    console,
    errors,
    oauth_routes,
    registration,
    v1,
)
from valetkey.web.correlation import CorrelationMiddleware, new_correlation_id
from valetkey.web.errors import json_response
from valetkey.web.gateway import Gateway
from valetkey.web.gateway import openapi_paths as gateway_paths
from valetkey.web.mcp import mcp_endpoint
from valetkey.web.mcp import openapi_paths as mcp_paths

log = logging.getLogger("valetkey")
PURGE_INTERVAL = 300.0


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.open(settings)
        await runtime.keys.ensure()
        hot = await runtime.open_hot_path()
        writer = BatchingAuditWriter(hot, settings.audit_batch_max)
        writer.start()
        app.state.oauth = runtime.oauth_server(writer, hot)
        app.state.audit = writer
        app.state.authorizer = runtime.authorizer(writer, app.state.oauth, hot)
        app.state.approvals = runtime.approvals(hot)
        app.state.authzen = runtime.authzen(writer, app.state.oauth, hot)
        app.state.runtime = runtime
        platform_http = httpx.AsyncClient(
            follow_redirects=False, timeout=token_timeout(settings.gateway_timeout)
        )
        app.state.platform_http = platform_http
        app.state.forwarder = proxy.Forwarder(settings.gateway_timeout)
        app.state.vault = runtime.token_vault(platform_http, hot)
        app.state.gateway_providers = ProviderDirectory(
            runtime.provider_store, app.state.oauth.cache
        )
        app.state.gateway_connections = runtime.connection_store.with_hot_path(hot)
        app.state.gateway = Gateway(app.state)
        purger = asyncio.create_task(_purge_expired(runtime, app.state.vault))
        dispatcher = runtime.dispatcher()
        notifying = asyncio.create_task(dispatcher.run())
        mcp = mcp_lifespan(app.state)  # /mcp: the MCP gateway's SDK session manager
        await mcp.__aenter__()
        try:
            yield
        finally:
            await mcp.__aexit__(None, None, None)
            dispatcher.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(notifying, 15)
            purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purger
            await app.state.forwarder.close()
            await platform_http.aclose()
            await writer.close()
            await hot.close()
            await runtime.close()

    app = FastAPI(
        title="ValetKey",
        version=__version__,
        summary="Identity, short-lived tokens and a tamper-evident audit log for AI agents.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        telemetry={"tracing": settings.otel, "metrics": settings.otel, "logs": settings.otel},
    )
    errors.install(app)
    app.include_router(authorize.router)
    app.include_router(v1.router)
    app.include_router(authzen.router)
    app.include_router(connections.router)
    app.include_router(registration.router)
    console.install(app)
    app.router.routes.append(Route("/mcp", mcp_endpoint(app.state), include_in_schema=False))
    app.add_middleware(oauth_routes.OAuthEndpoints)
    app.add_middleware(CorrelationMiddleware)  # outermost of ours: every response has the id

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema["paths"].update(oauth_routes.openapi_paths())
            schema["paths"].update(gateway_paths())
            schema["paths"].update(mcp_paths())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/healthz", tags=["meta"], summary="Liveness")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/.well-known/oauth-authorization-server",
        tags=["oauth"],
        summary="Authorization server metadata (RFC 8414)",
    )
    async def metadata() -> Response:
        body = app.state.oauth.metadata()
        return json_response(body, headers={"Cache-Control": "max-age=300"})

    @app.get("/jwks", tags=["oauth"], summary="Public signing keys (RFC 7517)")
    async def jwks() -> Response:
        runtime: Runtime = app.state.runtime
        body = await runtime.keys.jwks()
        return Response(
            json_response(body).body,
            headers={"Cache-Control": "max-age=60"},
            media_type="application/jwk-set+json",
        )

    return app


async def _purge_expired(runtime: Runtime, vault: TokenVault) -> None:
    """Drop used assertion ids, revocations and usage counters once what they guard has
    expired, mark expired approvals as such (with their audit events), and refresh the
    connections of platforms that revoke idle grants."""
    while True:
        await asyncio.sleep(PURGE_INTERVAL)
        try:
            now = runtime.clock.now()
            await runtime.oauth_store.purge_expired(now)
            await runtime.usage_store.purge(now)
            await runtime.approvals().expire_overdue()
            await vault.refresh_idle(runtime.connection_store, new_correlation_id())
        except Exception:  # the next round tries again; never take the server down for this
            log.exception("purging expired records failed")


def app_from_env() -> FastAPI:
    return create_app(Settings())
