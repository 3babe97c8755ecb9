"""`/oauth/authorize`: ValetKey's own user login and the consent screen. The rules live in
`valetkey.oauth.authorize`; this module adds cookies, forms and pages.

Two cookies, both HttpOnly: `vk_csrf` (random, double-submitted in every form) and the
sign-in session of `valetkey.web.session`.
"""

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from valetkey.audit.events import AuditEvent
from valetkey.errors import Forbidden, ValetKeyError
from valetkey.identity.models import Delegation, User
from valetkey.identity.scopes import closure
from valetkey.oauth import sessions
from valetkey.oauth.audience import all_implications
from valetkey.oauth.authorize import (
    AuthorizationRequest,
    AuthorizeError,
    check_client,
    parse_request,
    single_values,
)
from valetkey.oauth.client_documents import ClientDocumentError, is_document_url
from valetkey.oauth.delegated import mandate_for
from valetkey.oauth.errors import OAuthError
from valetkey.runtime import Runtime
from valetkey.web.console.base import AUTHORIZE_HEADERS, render, same_origin, span
from valetkey.web.correlation import correlation_id
from valetkey.web.session import (
    CSRF_COOKIE,
    TooLarge,
    browser_csrf,
    capped_body,
    check_password,
    client_address,
    form_token,
    form_token_ok,
    session_user,
    set_csrf,
    set_session,
    sign_session,
)

router = APIRouter()
MAX_QUERY = 8192
MAX_FORM = 16 * 1024
_PARAMS_DOC = [
    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
    for name in ("response_type", "client_id", "redirect_uri", "scope", "state", "resource",
                 "code_challenge", "code_challenge_method", "authorization_details", "prompt",
                 "dpop_jkt")
]  # fmt: skip
_FORM_DOC = {
    "requestBody": {
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        name: {"type": "string"}
                        for name in ("q", "action", "csrf", "email", "password")
                    },
                }
            }
        }
    }
}


def _with_csrf(response: Response, runtime: Runtime, token: str) -> Response:
    return set_csrf(response, runtime, token, "/oauth/authorize")


# pages ---------------------------------------------------------------------------------------
def _login_page(
    request: Request, req: AuthorizationRequest, query: str, csrf: str, error: str = ""
) -> HTMLResponse:
    return render(
        request, None, "authorize_login.html", 401 if error else 200, AUTHORIZE_HEADERS,
        title="Sign in", tenant_name=req.tenant.name, client_name=req.client.name,
        query=query, csrf=csrf, error=error,
    )  # fmt: skip


def _error_page(request: Request, exc: AuthorizeError) -> HTMLResponse:
    return render(
        request, None, "error.html", 400, AUTHORIZE_HEADERS, title="Request refused",
        detail=f"This sign-in request cannot go on: {exc.error}: {exc.description}",
    )  # fmt: skip


# flow ----------------------------------------------------------------------------------------
class _Flow:
    """One request to the endpoint: the runtime, the parsed request and its query."""

    def __init__(self, request: Request, runtime: Runtime, req: AuthorizationRequest, query: str):
        self.request = request
        self.runtime = runtime
        self.req = req
        self.query = query
        self.cid = correlation_id(request.scope)
        self.csrf = browser_csrf(request)

    @property
    def issuer(self) -> str:
        return self.runtime.settings.issuer

    @property
    def form_token(self) -> str:
        return form_token(self.runtime, self.csrf, self.query)

    def back(self, **params: str) -> Response:
        response = RedirectResponse(self.req.redirect(self.issuer, **params), 303)
        response.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
        return response

    async def audit(
        self, type: str, user_id: str | None, failure: str | None = None, **data: Any
    ) -> None:
        """A sign-in or consent event; `failure` is the reason when it is one."""
        await self.request.app.state.audit.record(
            AuditEvent(
                type,
                self.req.tenant.id,
                self.runtime.clock.now(),
                self.cid,
                outcome="failure" if failure else "success",
                reason=failure,
                agent_id=self.req.client.id,
                user_id=user_id,
                data=data,
            )
        )

    async def after_login(self, user: User) -> Response:
        """Signed in: a service client gets its code; an agent needs the user's consent."""
        if not self.req.client.is_agent:
            return await self.issue_code(user, None, self.req.scopes)
        existing = await self.covering_delegation(user)
        if existing is not None and self.req.prompt != "consent" and self.req.mandate is None:
            return await self.issue_code(user, existing, self.req.scopes)
        granted, withheld = await self.grantable(user)
        sponsor = await self.runtime.delegation_store.user_by_id(self.req.client.sponsor_id or "")
        settings = self.runtime.settings
        page = render(
            self.request, None, "consent.html", 200, AUTHORIZE_HEADERS,
            title="Allow this agent?", user_email=user.email, agent=self.req.client,
            sponsor=sponsor.email if sponsor else None, granted=granted, withheld=withheld,
            audience=self.req.audience,
            mandate=self.req.mandate.to_detail() if self.req.mandate else None,
            lifetime=span(settings.refresh_token_ttl),
            token_lifetime=span(min(settings.access_token_ttl,
                                    self.req.tenant.settings.max_token_lifetime)),
            query=self.query, csrf=self.form_token,
        )  # fmt: skip
        return _with_csrf(page, self.runtime, self.csrf)

    async def grantable(self, user: User) -> tuple[list[str], list[str]]:
        """Which requested scopes this user may delegate, and which not (and why not)."""
        svc = self.runtime.delegations(self.cid)
        rights = await svc.rights_of(user)
        settings = self.req.tenant.settings
        granted, withheld = [], []
        for scope in self.req.scopes:
            admin_only = scope in settings.admin_only_scopes and "admin" not in user.roles
            if scope in rights and not admin_only and scope not in settings.blocked_scopes:
                granted.append(scope)
            else:
                withheld.append(scope)
        return granted, withheld

    async def covering_delegation(self, user: User) -> Delegation | None:
        """A live delegation that already grants everything asked (no need to ask again)."""
        store = self.runtime.delegation_store
        now = self.runtime.clock.now()
        implies = all_implications(await self.runtime.identity_store.list_resources(user.tenant_id))
        for d in await store.live_delegations(user.tenant_id, user.id, self.req.client.id, now):
            if d.reaches(self.req.audience) and set(self.req.scopes) <= closure(d.scopes, implies):
                return d
        return None

    async def consent(self, user: User) -> Response:
        granted, _ = await self.grantable(user)
        if not granted:
            return self.back(
                error="access_denied", error_description="you hold none of the requested scopes"
            )
        svc = self.runtime.delegations(self.cid)
        try:
            delegation = await svc.create_delegation(
                self.req.tenant.id, user.email, self.req.client.id, granted,
                [self.req.resource] if self.req.resource else [],
                self.runtime.settings.refresh_token_ttl,
            )  # fmt: skip
        except ValetKeyError as exc:
            return self.back(error="access_denied", error_description=str(exc))
        return await self.issue_code(user, delegation, tuple(granted))

    async def issue_code(
        self, user: User, delegation: Delegation | None, scopes: tuple[str, ...] | list[str]
    ) -> Response:
        now = self.runtime.clock.now()
        code = sessions.new_opaque(sessions.CODE_PREFIX)
        try:  # an admin's mandate template on the delegation bounds the task's mandate
            mandate = mandate_for(self.req.mandate, [delegation] if delegation else [])
        except OAuthError as exc:
            return self.back(error=exc.error, error_description=exc.description)
        record = sessions.AuthorizationCode(
            digest=sessions.digest(code),
            tenant_id=self.req.tenant.id,
            client_id=self.req.client.id,
            user_id=user.id,
            delegation_id=delegation.id if delegation else None,
            redirect_uri=self.req.redirect_uri,
            scopes=tuple(scopes),
            resource=self.req.resource,
            code_challenge=self.req.code_challenge,
            created_at=now,
            expires_at=now + sessions.CODE_LIFETIME,
            dpop_jkt=self.req.dpop_jkt,
            mandate=mandate.to_detail() if mandate else None,
        )
        event = AuditEvent(
            "authorization.granted", self.req.tenant.id, now, self.cid,
            agent_id=self.req.client.id, user_id=user.id,
            data={"scope": " ".join(scopes), "aud": self.req.audience,
                  "delegation_id": record.delegation_id},
        )  # fmt: skip
        await self.runtime.session_store.save_code(record, [event])
        return self.back(code=code)


async def _flow(request: Request, query: str) -> "_Flow | Response":
    runtime: Runtime = request.app.state.runtime
    try:
        if len(query) > MAX_QUERY:
            raise AuthorizeError("invalid_request", "the request is too long")
        params = single_values(parse_qsl(query, keep_blank_values=True, max_num_fields=50))
        client_id = params.get("client_id", "")
        if is_document_url(client_id):  # a client ID metadata document: fetch, register
            try:
                client_id = await runtime.client_documents.resolve(client_id)
            except ClientDocumentError as exc:
                raise AuthorizeError("invalid_client", str(exc)) from exc
        ctx = (
            await runtime.oauth_store.load_client_context(client_id)
            if 0 < len(client_id) <= 128 and client_id.isprintable()
            else None
        )
        ctx, redirect_uri = check_client(ctx, params)
        resources = tuple(await runtime.identity_store.list_resources(ctx.tenant.id))
        req = parse_request(ctx, redirect_uri, params, resources, runtime.settings.issuer)
    except AuthorizeError as exc:
        if exc.request is None:
            return _error_page(request, exc)
        flow = _Flow(request, runtime, exc.request, query)
        return flow.back(error=exc.error, error_description=exc.description)
    except ValueError:
        return _error_page(request, AuthorizeError("invalid_request", "malformed query string"))
    return _Flow(request, runtime, req, query)


@router.get("/oauth/authorize", tags=["oauth"], summary="Authorization endpoint (RFC 6749 §4.1)",
            response_class=HTMLResponse, openapi_extra={"parameters": _PARAMS_DOC})  # fmt: skip
async def authorize(request: Request) -> Response:
    flow = await _flow(request, request.url.query)
    if isinstance(flow, Response):
        return flow
    user = await session_user(request, flow.runtime, flow.req.tenant.id)
    if user is None or flow.req.prompt == "login":
        return _with_csrf(
            _login_page(request, flow.req, flow.query, flow.form_token), flow.runtime, flow.csrf
        )
    return await flow.after_login(user)


@router.post("/oauth/authorize", tags=["oauth"], summary="Sign-in and consent (form posts)",
             response_class=HTMLResponse, openapi_extra=_FORM_DOC)  # fmt: skip
async def authorize_post(request: Request) -> Response:
    try:
        body = await capped_body(request, MAX_FORM)
        form = dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20))
    except (TooLarge, UnicodeDecodeError, ValueError):
        form = {}
    runtime: Runtime = request.app.state.runtime
    try:
        same_origin(request)  # a sign-in or consent posted from another site: never
    except Forbidden:
        return _error_page(request, AuthorizeError("invalid_request", "posted from another site"))
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not form_token_ok(runtime, cookie, form.get("q", ""), form.get("csrf", "")):
        return _error_page(
            request, AuthorizeError("invalid_request", "the form expired; start again")
        )
    flow = await _flow(request, form.get("q", ""))
    if isinstance(flow, Response):
        return flow
    action = form.get("action")
    if action == "login":
        email = form.get("email", "")[:320].strip().lower()
        user, locked = await check_password(
            flow.runtime, flow.cid, flow.req.tenant.id, email, form.get("password", ""),
            client_address(request),
        )  # fmt: skip
        if locked:
            await flow.audit("user.login_failed", None, "too many failed sign-ins")
            message = f"Too many failed sign-ins. Try again in {int(locked) // 60 + 1} minutes."
            page = _login_page(request, flow.req, flow.query, flow.form_token, message)
            page.status_code = 429
            page.headers["Retry-After"] = str(int(locked) + 1)
            return _with_csrf(page, flow.runtime, flow.csrf)
        if user is None:
            await flow.audit("user.login_failed", None, "wrong email or password")
            wrong = "Wrong email or password."
            page = _login_page(request, flow.req, flow.query, flow.form_token, wrong)
            return _with_csrf(page, flow.runtime, flow.csrf)
        await flow.audit("user.logged_in", user.id)
        response = await flow.after_login(user)
        set_session(
            response, flow.runtime, await sign_session(flow.runtime, user, flow.runtime.clock.now())
        )
        return response
    user = await session_user(request, flow.runtime, flow.req.tenant.id)
    if user is None:
        return _with_csrf(
            _login_page(request, flow.req, flow.query, flow.form_token), flow.runtime, flow.csrf
        )
    if action == "deny":
        await flow.audit("consent.denied", user.id)
        return flow.back(error="access_denied", error_description="the user declined")
    if action == "allow" and flow.req.client.is_agent:
        return await flow.consent(user)
    return _error_page(request, AuthorizeError("invalid_request", "unknown action"))
