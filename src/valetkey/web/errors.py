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


def _console(request: Request, status: int, title: str, detail: str) -> Response | None:
    """A console page's error is a page; everything else is JSON."""
    if not request.url.path.startswith("/console"):
        return None
    from valetkey.web.console import error_page  # the console imports this module

    return error_page(request, status, title, detail)


_TITLES = {400: "That did not work", 403: "Not for you", 404: "Not found",
           405: "Not allowed", 409: "Already changed", 500: "Something went wrong"}  # fmt: skip


def install(app: FastAPI) -> None:
    @app.exception_handler(OAuthError)
    async def _oauth(request: Request, exc: OAuthError) -> Response:
        return oauth_error_response(exc)

    @app.exception_handler(ValetKeyError)
    async def _service(request: Request, exc: ValetKeyError) -> Response:
        status = next((s for t, s in _STATUS.items() if isinstance(exc, t)), 400)
        page = _console(request, status, _TITLES.get(status, "That did not work"), str(exc))
        if page is not None:
            return page
        return problem(status, exc.code, exc.__class__.__name__, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_oauth(request):
            body = {"error": "invalid_request", "error_description": str(exc.detail)}
            return json_response(body, exc.status_code, {**NO_STORE, **(exc.headers or {})})
        page = _console(request, exc.status_code, _TITLES.get(exc.status_code, "Error"),
                        str(exc.detail))  # fmt: skip
        if page is not None:
            return page
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
        page = _console(request, 400, _TITLES[400], "the request is malformed")
        if page is not None:
            return page
        return problem(400, "invalid_request", "Invalid request", "see errors", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if _is_oauth(request):
            return json_response({"error": "server_error"}, 500, NO_STORE)
        page = _console(request, 500, _TITLES[500], "the error is logged; try again")
        if page is not None:
            return page
        return problem(500, "server_error", "Internal error")
