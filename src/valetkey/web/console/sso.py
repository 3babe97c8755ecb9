"""Console sign-in through the tenant's trusted issuer (OpenID Connect).

`/console/login/sso` sends the browser to the issuer with a fresh `state`; the PKCE
verifier and the `nonce` are HMACs of that state under the server's key, so the only thing
the browser carries is `vk_sso` (HttpOnly, SameSite=Lax, signed, ten minutes): which state,
tenant and issuer, and where to go after. The callback completes only in that browser."""

import hmac
import secrets
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from valetkey.audit.events import AuditEvent
from valetkey.errors import NotFound
from valetkey.identity.models import Tenant, TrustedIssuer
from valetkey.oauth.sso import SsoError
from valetkey.web.console.base import cid, redirect, runtime_of, safe_next
from valetkey.web.session import mac, seal, secure_cookies, set_session, sign_session, unseal

router = APIRouter(prefix="/console/login/sso", include_in_schema=False)
COOKIE = "vk_sso"
CALLBACK = "/console/login/sso/callback"
TTL = 600


def _back(error: str, tenant: str = "") -> Response:
    """To the sign-in form, saying what went wrong (a fixed sentence picked by code)."""
    return redirect(f"/console/login?tenant={quote(tenant)}&sso={quote(error)}")


async def _tenant_issuers(request: Request, ref: str) -> tuple[Tenant, list[TrustedIssuer]]:
    runtime = runtime_of(request)
    tenant = await runtime.identity_store.find_tenant(ref)
    return tenant, await runtime.console_login(cid(request)).issuers(tenant.id)


@router.get("")
async def start(request: Request) -> Response:
    runtime = runtime_of(request)
    ref = request.query_params.get("tenant", "").strip()[:128]
    try:
        tenant, issuers = await _tenant_issuers(request, ref) if ref else (None, [])
    except NotFound:
        tenant, issuers = None, []
    wanted = request.query_params.get("issuer")
    issuer = next((i for i in issuers if wanted in (None, i.id)), None)
    if tenant is None or issuer is None:
        return _back("unavailable", ref)
    state = secrets.token_urlsafe(32)
    redirect_uri = runtime.settings.issuer + CALLBACK
    try:
        url = await runtime.sso.authorization_url(
            issuer, redirect_uri, state, _nonce(request, state), _verifier(request, state)
        )
    except SsoError:
        return _back("unreachable", ref)
    sealed = seal(runtime, "sso", {
        "s": state, "t": tenant.id, "i": issuer.id, "e": int(runtime.clock.now()) + TTL,
        "n": safe_next(request.query_params.get("next", "")),
    })  # fmt: skip
    response = RedirectResponse(url, 302, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE, sealed, max_age=TTL, path=CALLBACK,
        httponly=True, samesite="lax", secure=secure_cookies(runtime),
    )  # fmt: skip
    return response


def _nonce(request: Request, state: str) -> str:
    return mac(runtime_of(request), "sso-nonce", state)


def _verifier(request: Request, state: str) -> str:
    return mac(runtime_of(request), "sso-verifier", state)  # 43 characters, as RFC 7636 asks


def _cookie(request: Request) -> dict[str, Any] | None:
    runtime = runtime_of(request)
    data = unseal(runtime, "sso", request.cookies.get(COOKIE, ""))
    try:
        fresh = data is not None and float(data.get("e", 0)) > runtime.clock.now()
    except (TypeError, ValueError):
        fresh = False
    return data if fresh else None


@router.get("/callback")
async def callback(request: Request) -> Response:
    runtime = runtime_of(request)
    started = _cookie(request)
    state = request.query_params.get("state", "")[:512]
    if started is None or not hmac.compare_digest(str(started.get("s", "")), state):
        return _back("expired")
    tenant = await runtime.identity_store.find_tenant(str(started["t"]))
    login = runtime.console_login(cid(request))
    issuer = next((i for i in await login.issuers(tenant.id) if i.id == started["i"]), None)
    code = request.query_params.get("code", "")[:2048]
    if issuer is None or not code:
        return _back("refused", tenant.name)
    try:
        claims = await runtime.sso.finish(
            issuer, await login.secret(issuer), runtime.settings.issuer + CALLBACK, code,
            _verifier(request, state), _nonce(request, state),
        )  # fmt: skip
    except SsoError as exc:
        await _audit(request, tenant.id, None, issuer, str(exc))
        return _back("refused", tenant.name)
    named = claims.get(issuer.claim)
    user = (
        await runtime.delegation_store.user_by_email(tenant.id, named.strip().lower())
        if isinstance(named, str) and named.strip()
        else None
    )
    if user is None or user.status != "active":
        await _audit(request, tenant.id, None, issuer, "no active user of this tenant by that name")
        return _back("unknown", tenant.name)
    await _audit(request, tenant.id, user.id, issuer, None)
    response = redirect(safe_next(str(started.get("n", ""))))
    set_session(response, runtime, await sign_session(runtime, user, runtime.clock.now()))
    response.delete_cookie(COOKIE, path=CALLBACK)
    return response


async def _audit(
    request: Request, tenant_id: str, user_id: str | None, issuer: TrustedIssuer,
    failure: str | None,
) -> None:  # fmt: skip
    runtime = runtime_of(request)
    await request.app.state.audit.record(
        AuditEvent(
            "user.logged_in" if failure is None else "user.login_failed", tenant_id,
            runtime.clock.now(), cid(request), outcome="failure" if failure else "success",
            reason=failure, user_id=user_id, data={"via": "oidc", "issuer": issuer.issuer},
        )
    )  # fmt: skip
