"""`/mcp`'s front door: who is calling, before the MCP gateway sees the request.

The MCP authorization specification, as a resource server: every request carries an
access token (Bearer, or DPoP with its proof) issued by ValetKey for the resource
`{issuer}/mcp` (RFC 8707) — a token for any other audience is refused, never passed
through — to an active agent. Otherwise `401` with `WWW-Authenticate: Bearer
resource_metadata="{issuer}/.well-known/oauth-protected-resource/mcp"` (RFC 9728 §5.1), from
which an MCP client discovers ValetKey as the authorization server. The verified caller
travels to the handlers in the ASGI scope (`valetkey.mcp.SCOPE_KEY`), per HTTP request.
"""

from typing import Any
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from valetkey.mcp import SCOPE_KEY, Authenticated, create_mcp_app
from valetkey.mcp.upstreams import mcp_audience
from valetkey.oauth import dpop
from valetkey.policy.authorizer import Authorizer, CallerError
from valetkey.web import v1
from valetkey.web.correlation import correlation_id
from valetkey.web.errors import log, problem

PATH = "/mcp"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"


class McpEndpoint:
    def __init__(self, state: Any, app: ASGIApp) -> None:
        self._state = state
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if not self._origin_allowed(scope):
            await problem(403, "origin_not_allowed", "Forbidden",
                          "requests from this Origin are refused (DNS rebinding protection)")(
                scope, receive, send)  # fmt: skip
            return
        try:
            scope[SCOPE_KEY] = await self._authenticate(scope)
        except v1.Unauthorized as exc:
            await self._challenge(exc, scope)(scope, receive, send)
            return
        except Exception:
            log.exception("unhandled error authenticating %s %s", scope["method"], PATH)
            await problem(500, "server_error", "Internal error")(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _origin_allowed(self, scope: Scope) -> bool:
        """MCP streamable HTTP: a server MUST validate `Origin` when one is sent (browsers
        send it; DNS rebinding would otherwise let a page reach this endpoint). Allowed:
        ValetKey's own origin and `VALETKEY_MCP_ALLOWED_ORIGINS`. A ValetKey on loopback
        also refuses a non-local `Host`: that is what a rebound name looks like."""
        settings = self._state.runtime.settings
        parts = urlsplit(settings.issuer)
        if parts.hostname in _LOOPBACK:  # a local ValetKey: the Host must be local too
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if urlsplit(f"//{host}").hostname not in _LOOPBACK:
                return False
        origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
        if origin is None:
            return True
        if parts.hostname in _LOOPBACK and urlsplit(origin).hostname in _LOOPBACK:
            return True  # a local page talking to a local ValetKey
        allowed = {f"{parts.scheme}://{parts.netloc}"} | {
            o.strip().rstrip("/") for o in settings.mcp_allowed_origins.split(",") if o.strip()
        }
        return origin.rstrip("/") in allowed

    async def _authenticate(self, scope: Scope) -> Authenticated:
        authorization, proofs = "", []
        for key, value in scope["headers"]:
            if key == b"authorization" and not authorization:
                authorization = value.decode("latin-1")
            elif key == b"dpop":
                proofs.append(value.decode("latin-1"))
        state = self._state
        issuer: str = state.runtime.settings.issuer
        claims, ctx = await v1.token_from(state, scope["method"], authorization, proofs, PATH)
        if mcp_audience(issuer) not in v1.audiences(claims):
            raise v1.Unauthorized(
                "Bearer", "invalid_token",
                f"the access token is not for the MCP gateway (its resource must be "
                f"{mcp_audience(issuer)})",
            )  # fmt: skip
        authorizer: Authorizer = state.authorizer
        try:
            caller, ctx = await authorizer.caller(claims, ctx)
        except CallerError as exc:
            raise v1.Unauthorized("Bearer", "invalid_token", str(exc)) from exc
        return Authenticated(caller, ctx, correlation_id(scope))

    def _challenge(self, exc: v1.Unauthorized, scope: Scope) -> Response:
        """401, naming where to find the authorization server (no error code when no
        credentials came at all, RFC 6750 §3.1)."""
        issuer: str = self._state.runtime.settings.issuer
        sent = any(k in (b"authorization", b"dpop") for k, _ in scope["headers"])
        response = problem(401, exc.error, "Unauthorized", exc.description)
        challenge = f'{exc.scheme} realm="valetkey", resource_metadata="{issuer}{METADATA_PATH}"'
        if sent:
            described = exc.description.replace("\\", "").replace('"', "'")
            challenge += f', error="{exc.error}", error_description="{described}"'
        if exc.scheme == "DPoP":
            challenge += f', algs="{" ".join(dpop.DPOP_ALGORITHMS)}"'
        response.headers["WWW-Authenticate"] = challenge
        return response


def mcp_endpoint(state: Any) -> McpEndpoint:
    """`/mcp`: the authentication above, then the MCP gateway (`valetkey.mcp`)."""
    return McpEndpoint(state, create_mcp_app(state))


def openapi_paths() -> dict[str, Any]:
    """`/mcp` bypasses FastAPI's generator (it speaks MCP): its description."""
    return {PATH: {"post": {
        "tags": ["mcp"],
        "summary": "MCP streamable HTTP: tools/list and tools/call, each call authorized",
        "operationId": "mcp",
        "description": "JSON-RPC 2.0 per the Model Context Protocol. Needs an agent token for "
        "`{issuer}/mcp`; without one, 401 with `WWW-Authenticate: Bearer resource_metadata=…`.",
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {"200": {"description": "The JSON-RPC response"},
                      "202": {"description": "A notification, accepted"},
                      "401": {"description": "No valid agent token for {issuer}/mcp"}},
    }}}  # fmt: skip
