"""OAuth endpoints over HTTP: form parsing and response headers; the logic is `OAuthServer`'s."""

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from valetkey.oauth.context import RequestMeta
from valetkey.oauth.errors import InvalidRequest, OAuthError
from valetkey.oauth.server import OAuthServer
from valetkey.web.correlation import correlation_id
from valetkey.web.errors import NO_STORE, json_response, oauth_error_response

MAX_FORM_BYTES = 64 * 1024
_CLIENT_AUTH_FIELDS = {
    "client_id": {"type": "string"},
    "client_secret": {"type": "string"},
    "client_assertion_type": {"type": "string"},
    "client_assertion": {"type": "string"},
}


def _form_doc(fields: dict[str, dict[str, object]], required: list[str]) -> dict[str, object]:
    schema = {
        "type": "object",
        "properties": {**fields, **_CLIENT_AUTH_FIELDS},
        "required": required,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


_TOKEN_DOC = _form_doc(
    {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "scope": {"type": "string"},
        "resource": {"type": "string"},
    },
    ["grant_type"],
)
_TOKEN_PARAM_DOC = _form_doc(
    {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, ["token"]
)


async def read_form(request: Request) -> list[tuple[str, str]]:
    """The body's parameters; OAuth parameters never travel in the query string."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    if request.url.query:
        raise InvalidRequest("parameters belong in the request body, not the query string")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise InvalidRequest("request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequest("request body too large")
    try:
        text = body.decode("utf-8")
        return parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=100
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("malformed form body") from exc


def _meta(request: Request) -> RequestMeta:
    return RequestMeta(correlation_id(request.scope), request.headers.get("authorization"))


def _server(request: Request) -> OAuthServer:
    server: OAuthServer = request.app.state.oauth
    return server


async def _answer(
    request: Request,
    endpoint: Callable[[list[tuple[str, str]], RequestMeta], Awaitable[dict[str, Any] | None]],
) -> Response:
    try:
        body = await endpoint(await read_form(request), _meta(request))
    except OAuthError as exc:
        return oauth_error_response(exc)
    if body is None:
        return Response(b"", 200, NO_STORE)
    return json_response(body, 200, NO_STORE)


async def token(request: Request) -> Response:
    return await _answer(request, _server(request).token)


async def introspect(request: Request) -> Response:
    return await _answer(request, _server(request).introspect)


async def revoke(request: Request) -> Response:
    return await _answer(request, _server(request).revoke)


def routes() -> list[Route]:
    """Plain Starlette routes: FastAPI's per-route machinery (dependency solving, response
    models) measured ~20% of a token request's CPU and these endpoints use none of it."""
    return [
        Route("/oauth/token", token, methods=["POST"]),
        Route("/oauth/introspect", introspect, methods=["POST"]),
        Route("/oauth/revoke", revoke, methods=["POST"]),
    ]


_OAUTH_ERROR = {
    "description": "RFC 6749 error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {"type": "string"},
                    "error_description": {"type": "string"},
                },
                "required": ["error"],
            }
        }
    },
}


def _operation(summary: str, doc: dict[str, object], ok: str) -> dict[str, object]:
    return {
        "post": {
            "tags": ["oauth"],
            "summary": summary,
            "operationId": summary.split(" ")[0].lower(),
            **doc,
            "responses": {
                "200": {"description": ok},
                "400": _OAUTH_ERROR,
                "401": _OAUTH_ERROR,
                "403": _OAUTH_ERROR,
            },
        }
    }


def openapi_paths() -> dict[str, object]:
    """The OpenAPI description of the routes above (they bypass FastAPI's generator)."""
    return {
        "/oauth/token": _operation("Token endpoint (RFC 6749 §3.2)", _TOKEN_DOC, "A token"),
        "/oauth/introspect": _operation(
            "Introspection (RFC 7662)", _TOKEN_PARAM_DOC, "The token's state"
        ),
        "/oauth/revoke": _operation("Revocation (RFC 7009)", _TOKEN_PARAM_DOC, "Revoked"),
    }
