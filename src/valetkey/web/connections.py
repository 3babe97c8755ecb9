"""`/v1/connections/start` and `/v1/connections/callback`: the connect flow.

The person is ValetKey's signed-in user: the sign-in cookie of `/oauth/authorize`, or a
sign-in token (Bearer). `start` sends the browser to the platform with a single-use
`state` and PKCE, and sets a cookie bound to that state: the callback completes only in
the browser that started, so nobody can slip their own platform grant — or harvest
someone else's — through a link.
"""

import hmac
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from valetkey.clock import iso
from valetkey.errors import Forbidden
from valetkey.identity.models import User
from valetkey.runtime import Runtime
from valetkey.vault.platform import PlatformError, PlatformRefused
from valetkey.vault.service import CONNECT_TTL, ConnectFlow, ConnectFlowError
from valetkey.web import v1
from valetkey.web.correlation import correlation_id
from valetkey.web.errors import NO_STORE, json_response, problem
from valetkey.web.session import mac, secure_cookies, signed_in_user

router = APIRouter(prefix="/v1/connections", tags=["connections"])
STATE_COOKIE = "vk_connect"
CALLBACK = "/v1/connections/callback"


def _flow(request: Request) -> ConnectFlow:
    runtime: Runtime = request.app.state.runtime
    return runtime.connect_flow(request.app.state.platform_http, correlation_id(request.scope))


async def _person(request: Request, path: str) -> User:
    """The signed-in person: a sign-in token, else the sign-in cookie."""
    runtime: Runtime = request.app.state.runtime
    if request.headers.get("authorization"):
        claims = await v1.token_claims(request, path)
        if claims["sub"] == claims["client_id"] or "act" in claims:
            raise Forbidden("only a person connects a platform; an agent never does")
        user = await runtime.delegation_store.user_by_id(str(claims["sub"]))
    else:
        user = await signed_in_user(request, runtime)
    if user is None or user.status != "active":
        raise v1.Unauthorized("Bearer", "invalid_token", "sign in to ValetKey first")
    return user


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@router.get(
    "/start",
    summary="Connect a platform: redirects to its authorization page",
    responses={302: {"description": "To the platform"}, 200: {"description": "As JSON"}},
)
async def start(
    request: Request, provider: str, agent: str | None = None, scope: str | None = None
) -> Response:
    try:
        user = await _person(request, "/v1/connections/start")
    except v1.Unauthorized as exc:
        return v1.unauthorized(exc)
    started = await _flow(request).start(
        user, provider[:40], agent[:64] if agent else None, (scope or "").split()[:50]
    )
    runtime: Runtime = request.app.state.runtime
    response: Response
    if _wants_json(request):
        response = json_response(
            {"authorize_url": started.authorize_url, "expires_at": iso(started.expires_at)},
            200, NO_STORE,
        )  # fmt: skip
    else:
        response = RedirectResponse(started.authorize_url, 302, headers=NO_STORE)
    response.set_cookie(
        STATE_COOKIE, mac(runtime, "connect", started.state), max_age=CONNECT_TTL,
        path=CALLBACK, httponly=True, samesite="lax", secure=secure_cookies(runtime),
    )  # fmt: skip
    return response


@router.get("/callback", summary="Where the platform sends the browser back")
async def callback(
    request: Request, state: str = "", code: str | None = None, error: str | None = None
) -> Response:
    runtime: Runtime = request.app.state.runtime
    bound = request.cookies.get(STATE_COOKIE, "")
    if (
        not state
        or not bound
        or not hmac.compare_digest(bound, mac(runtime, "connect", state[:512]))
    ):
        detail = "this connect flow was not started in this browser; start again"
        return problem(400, "invalid_state", "Invalid state", detail)
    try:
        connection = await _flow(request).complete(state[:512], code, (error or None))
    except ConnectFlowError as exc:
        return problem(400, exc.code, "Connect failed", str(exc))
    except PlatformRefused as exc:
        return problem(400, "platform_refused", "Connect failed", str(exc))
    except PlatformError as exc:
        return problem(exc.status, exc.code, "Platform unavailable", str(exc))
    view: dict[str, Any] = connection.view(connection.owner_id)
    response: Response
    if _wants_json(request):
        response = json_response(view, 200, NO_STORE)
    else:
        # A person in a browser: back to the console, which says it is done.
        response = RedirectResponse("/console/connections?done=connected", 303, NO_STORE)
    response.delete_cookie(STATE_COOKIE, path=CALLBACK)
    return response
