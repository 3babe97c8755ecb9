"""OAuth endpoints over HTTP: form parsing and response headers; the logic is `OAuthServer`'s.

The OpenAPI description of these endpoints is written out below, since they bypass
FastAPI's generator."""

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from valetkey.oauth.context import RequestMeta
from valetkey.oauth.errors import InvalidRequest, OAuthError
from valetkey.oauth.server import OAuthServer
from valetkey.web import v1
from valetkey.web.correlation import correlation_id
from valetkey.web.errors import NO_STORE, json_response, log, oauth_error_response, problem

MAX_FORM_BYTES = 64 * 1024
GATEWAY_PREFIX = "/v1/gateway/"
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
        "grant_type": {
            "type": "string",
            "enum": [
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange",
                "authorization_code",
                "refresh_token",
            ],
        },
        "scope": {"type": "string"},
        "resource": {"type": "string"},
        **{
            name: {"type": "string"}
            for name in (
                "audience",
                "subject_token",
                "subject_token_type",
                "actor_token",
                "actor_token_type",
                "requested_token_type",
                "authorization_details",
                "code",
                "redirect_uri",
                "code_verifier",
                "refresh_token",
            )
        },
    },
    ["grant_type"],
)
_TOKEN_PARAM_DOC = _form_doc(
    {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}, ["token"]
)


def parse_form(content_type: str, query: bytes, body: bytes) -> list[tuple[str, str]]:
    """The body's parameters; OAuth parameters never travel in the query string."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    if query:
        raise InvalidRequest("parameters belong in the request body, not the query string")
    try:
        text = body.decode("utf-8")
        return parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=100
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("malformed form body") from exc


async def _read_body(
    receive: Receive, declared_length: str | None, limit: int = MAX_FORM_BYTES
) -> bytes:
    if declared_length is not None and (
        not declared_length.isdigit() or int(declared_length) > limit
    ):
        raise InvalidRequest("request body too large")
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            raise InvalidRequest("request body too large")
        if not message.get("more_body"):
            return bytes(body)


_ENDPOINTS = {"/oauth/token": "token", "/oauth/introspect": "introspect", "/oauth/revoke": "revoke"}
_NOT_ALLOWED = {"error": "invalid_request", "error_description": "use POST"}


class OAuthEndpoints:
    """`/oauth/token`, `/oauth/introspect`, `/oauth/revoke` (and `/v1/authorize`) as a small
    ASGI app ahead of FastAPI's routing. Why: routing, the exception middleware, the exit
    stack and request objects measured about a fifth of a token request's CPU (and 15% of
    a decision's), and these endpoints need none of them. Everything else passes through
    to FastAPI."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            if scope["type"] == "http" and scope["path"] == "/v1/authorize":
                await self._decide(scope, receive, send)
                return
            if scope["type"] == "http" and scope["path"].startswith(GATEWAY_PREFIX):
                await scope["app"].state.gateway(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            response = json_response(_NOT_ALLOWED, 405, {**NO_STORE, "Allow": "POST"})
        else:
            response = await self._handle(endpoint, scope, receive)
        await response(scope, receive, send)

    async def _decide(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /v1/authorize`, the hottest `/v1` call, also ahead of the routing."""
        if scope["method"] != "POST":
            response = problem(405, "method_not_allowed", "Method not allowed", "use POST")
            response.headers["Allow"] = "POST"
        else:
            authorization, proofs, length = "", [], None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                elif name == b"dpop":
                    proofs.append(value.decode("latin-1"))
                elif name == b"content-length":
                    length = value.decode("latin-1")
            try:
                body = await _read_body(receive, length, v1.MAX_BODY)
                response = await v1.decide(
                    scope["app"].state, authorization, proofs, body, correlation_id(scope)
                )
            except OAuthError:
                response = problem(413, "too_large", "Request too large",
                                   f"the body is at most {v1.MAX_BODY} bytes")  # fmt: skip
            except Exception:  # the one place an unexpected error becomes a 500
                log.exception("unhandled error on POST /v1/authorize")
                response = problem(500, "server_error", "Internal error")
        await response(scope, receive, send)

    async def _handle(self, endpoint: str, scope: Scope, receive: Receive) -> Response:
        content_type, length, authorization = "", None, None
        proofs: list[str] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"dpop":
                proofs.append(value.decode("latin-1"))
        server: OAuthServer = scope["app"].state.oauth
        call: Callable[[list[tuple[str, str]], RequestMeta], Awaitable[dict[str, Any] | None]] = (
            getattr(server, endpoint)
        )
        meta = RequestMeta(
            correlation_id(scope),
            authorization,
            dpop=proofs[0] if len(proofs) == 1 else None,  # RFC 9449 §4.3: exactly one
            dpop_sent=bool(proofs),
        )
        try:
            try:
                body = await _read_body(receive, length)
                pairs = parse_form(content_type, scope.get("query_string", b""), body)
            except OAuthError as exc:
                if endpoint == "token":  # a refused token request is audited, however early
                    await server.record_refusal(exc, meta)
                raise
            result = await call(pairs, meta)
        except OAuthError as exc:
            return oauth_error_response(exc, meta.response_headers)
        except Exception:  # the one place an unexpected error becomes server_error
            log.exception("unhandled error on POST %s", scope["path"])
            return json_response({"error": "server_error"}, 500, NO_STORE)
        headers = {**NO_STORE, **meta.response_headers}
        if result is None:
            return Response(b"", 200, headers)
        return json_response(result, 200, headers)


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
