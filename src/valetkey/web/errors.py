"""Exceptions become responses here and only here.

`/oauth/*` answers RFC 6749 JSON (`error`, `error_description`); everything else answers
RFC 9457 `application/problem+json` with a stable `type`. Unknown exceptions are logged
and become `server_error` / 500 with no detail: never a traceback to the client.
"""

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from valetkey.errors import Conflict, Forbidden, InvalidInput, NotFound, ValetKeyError
from valetkey.oauth.errors import InvalidClient, OAuthError

log = logging.getLogger("valetkey.web")
PROBLEM_BASE = "urn:valetkey:problem:"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 400, Forbidden: 403}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def oauth_error_response(exc: OAuthError, extra: dict[str, str] | None = None) -> Response:
    headers = {**NO_STORE, **(extra or {})}
    if isinstance(exc, InvalidClient) and exc.basic_challenge:
        headers["WWW-Authenticate"] = 'Basic realm="valetkey"'
    return json_response(exc.to_json(), exc.status_code, headers)


def problem(status: int, code: str, title: str, detail: str = "", **extra: Any) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "code": code,
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(orjson.dumps(body), status, media_type="application/problem+json")


def _is_oauth(request: Request) -> bool:
    return request.url.path.startswith("/oauth/")


def install(app: FastAPI) -> None:
    @app.exception_handler(OAuthError)
    async def _oauth(request: Request, exc: OAuthError) -> Response:
        return oauth_error_response(exc)

    @app.exception_handler(ValetKeyError)
    async def _service(request: Request, exc: ValetKeyError) -> Response:
        status = next((s for t, s in _STATUS.items() if isinstance(exc, t)), 400)
        return problem(status, exc.code, exc.__class__.__name__, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_oauth(request):
            body = {"error": "invalid_request", "error_description": str(exc.detail)}
            return json_response(body, exc.status_code, {**NO_STORE, **(exc.headers or {})})
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = problem(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return problem(400, "invalid_request", "Invalid request", "see errors", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if _is_oauth(request):
            return json_response({"error": "server_error"}, 500, NO_STORE)
        return problem(500, "server_error", "Internal error")
