"""Signing in to the console (a ValetKey password) and out of it.

The sign-in form is shown before anyone is signed in, so its CSRF token is the
double-submit kind (`vk_csrf`, path `/console`); failed sign-ins count against the same
per-account lock as `/oauth/authorize`. Signing out ends every session of the user."""

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from valetkey.audit.events import AuditEvent
from valetkey.errors import NotFound
from valetkey.identity.models import Tenant
from valetkey.web.console.base import (
    Viewer,
    cid,
    form,
    printable,
    redirect,
    render,
    runtime_of,
    safe_next,
    same_origin,
    viewer,
)
from valetkey.web.session import (
    CSRF_COOKIE,
    TooLarge,
    browser_csrf,
    capped_body,
    check_password,
    clear_session,
    client_address,
    form_token,
    form_token_ok,
    set_csrf,
    set_session,
    sign_session,
    signed_in_user,
)

router = APIRouter(prefix="/console", include_in_schema=False)
_LOGIN = "console-login"


def home_of(who: Viewer) -> str:
    return "/console/" + who.nav()[0][0]


@router.get("")
async def home(request: Request) -> Response:
    return redirect(home_of(await viewer(request)))


_SSO_ERRORS = {
    "unavailable": "This organization has no company sign-in. Use your ValetKey password.",
    "unreachable": "The company sign-in service does not answer. Try again, or use your password.",
    "expired": "The sign-in took too long or began in another browser. Start again.",
    "refused": "The company sign-in did not complete. Start again.",
    "unknown": "That company account is not a user of this organization. Ask an admin.",
}


async def _login_page(
    request: Request, csrf: str, status: int = 200, error: str = "", **values: str
) -> Response:
    runtime = runtime_of(request)
    tenant = values.get("tenant") or request.query_params.get("tenant", "")
    issuers = []
    if tenant:  # the company sign-in buttons of the organization the link or form named
        try:
            found = await runtime.identity_store.find_tenant(tenant[:128])
            issuers = await runtime.console_login(cid(request)).issuers(found.id)
        except NotFound:
            pass
    page = render(
        request, None, "login.html", status,
        error=error or _SSO_ERRORS.get(request.query_params.get("sso", ""), ""),
        csrf=form_token(runtime, csrf, _LOGIN),
        next=safe_next(values.get("next") or request.query_params.get("next", "")),
        tenant=tenant, email=values.get("email", ""), issuers=issuers,
    )  # fmt: skip
    return set_csrf(page, runtime, csrf, "/console")


@router.get("/login")
async def login_form(request: Request) -> Response:
    runtime = runtime_of(request)
    if await signed_in_user(request, runtime) is not None:
        return redirect(safe_next(request.query_params.get("next", "")))
    return await _login_page(request, browser_csrf(request))


@router.post("/login")
async def login(request: Request) -> Response:
    runtime = runtime_of(request)
    same_origin(request)
    try:
        body = await capped_body(request, 16384)
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20))
    except (TooLarge, UnicodeDecodeError, ValueError):
        fields = {}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    csrf = browser_csrf(request)
    tenant_ref = printable(fields.get("tenant", "").strip()[:128])
    email = printable(fields.get("email", "")[:320].strip().lower())
    again = {"tenant": tenant_ref, "email": email, "next": fields.get("next", "")}
    if not form_token_ok(runtime, cookie, _LOGIN, fields.get("csrf", "")):
        return await _login_page(request, csrf, 400, "The form expired. Sign in again.", **again)
    tenant: Tenant | None
    try:
        tenant = await runtime.identity_store.find_tenant(tenant_ref) if tenant_ref else None
    except NotFound:
        tenant = None
    user, locked = await check_password(
        runtime, cid(request), tenant.id if tenant else None, email, fields.get("password", ""),
        client_address(request),
    )  # fmt: skip
    if tenant is not None and locked:
        await _audit(request, tenant.id, "user.login_failed", None, "too many failed sign-ins")
        page = await _login_page(
            request, csrf, 429,
            f"Too many failed sign-ins. Try again in {int(locked) // 60 + 1} minutes.", **again,
        )  # fmt: skip
        page.headers["Retry-After"] = str(int(locked) + 1)
        return page
    if tenant is not None and user is None:
        await _audit(request, tenant.id, "user.login_failed", None, "wrong email or password")
    if user is None:
        return await _login_page(
            request, csrf, 401, "Wrong organization, email or password.", **again
        )
    await _audit(request, user.tenant_id, "user.logged_in", user.id, None)
    response = redirect(safe_next(fields.get("next", "")))
    set_session(response, runtime, await sign_session(runtime, user, runtime.clock.now()))
    return response


async def _audit(
    request: Request, tenant_id: str, type: str, user_id: str | None, failure: str | None
) -> None:
    runtime = runtime_of(request)
    await request.app.state.audit.record(
        AuditEvent(
            type, tenant_id, runtime.clock.now(), cid(request),
            outcome="failure" if failure else "success", reason=failure, user_id=user_id,
            data={"via": "console"},
        )
    )  # fmt: skip


@router.post("/logout")
async def logout(request: Request) -> Response:
    who = await viewer(request)
    await form(request)
    runtime = runtime_of(request)
    await runtime.identity(cid(request)).sign_out(who.user)
    response = redirect("/console/login", "signed-out")
    clear_session(response, runtime)
    return response
