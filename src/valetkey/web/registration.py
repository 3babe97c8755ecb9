"""`POST /oauth/register` (RFC 7591 dynamic client registration) and the protected
resource metadata of `/mcp` (RFC 9728), which MCP clients start from."""

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from valetkey.identity.models import CLASSES
from valetkey.identity.registration import (
    RegistrationError,
    parse_metadata,
    registration_response,
)
from valetkey.oauth import dpop
from valetkey.runtime import Runtime
from valetkey.web.correlation import correlation_id
from valetkey.web.errors import NO_STORE, json_response

router = APIRouter(tags=["oauth"])
MAX_BODY = 16 * 1024


def _error(exc: RegistrationError) -> Response:
    return json_response({"error": exc.error, "error_description": exc.description}, 400, NO_STORE)


@router.post(
    "/oauth/register",
    summary="Dynamic client registration (RFC 7591): a pending agent of the default tenant",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["redirect_uris"],
                        "properties": {
                            "redirect_uris": {"type": "array", "items": {"type": "string"}},
                            "client_name": {"type": "string"},
                            "scope": {"type": "string"},
                            "token_endpoint_auth_method": {"type": "string"},
                            "grant_types": {"type": "array", "items": {"type": "string"}},
                            "response_types": {"type": "array", "items": {"type": "string"}},
                            "client_uri": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def register(request: Request) -> Response:
    body = await request.body()
    try:
        if len(body) > MAX_BODY:
            raise RegistrationError("invalid_client_metadata", "the body is too large")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RegistrationError("invalid_client_metadata", "the body is not JSON") from exc
        meta = parse_metadata(data)
        runtime: Runtime = request.app.state.runtime
        client, secret = await runtime.identity(correlation_id(request.scope)).register_client(meta)
    except RegistrationError as exc:
        return _error(exc)
    return json_response(
        registration_response(client, secret, meta, client.created_at), 201, NO_STORE
    )


@router.get(
    "/.well-known/oauth-protected-resource/mcp",
    summary="Protected resource metadata of /mcp (RFC 9728)",
)
async def mcp_resource_metadata(request: Request) -> Response:
    issuer = request.app.state.runtime.settings.issuer
    return json_response(
        {
            "resource": f"{issuer}/mcp",
            "authorization_servers": [issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": [f"mcp:{c}" for c in CLASSES],
            "resource_name": "ValetKey MCP gateway",
            "dpop_signing_alg_values_supported": list(dpop.DPOP_ALGORITHMS),
        },
        headers={"Cache-Control": "max-age=300"},
    )
