"""What every console page shares: who is signed in (and may they see this page), CSRF on
every form, the security headers, and rendering a Jinja2 template.

A console form's CSRF token is an HMAC of the session cookie's signed payload: it changes
with every sign-in, cannot be computed without the server's key, and needs no storage.
Pages refuse a cross-site POST on top of that (`Sec-Fetch-Site`, else `Origin`).
"""

import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from valetkey.clock import iso, to_datetime
from valetkey.errors import Forbidden, InvalidInput
from valetkey.identity.models import Tenant, User
from valetkey.runtime import Runtime
from valetkey.web.correlation import correlation_id
from valetkey.web.session import (
    PAGE_HEADERS,
    TooLarge,
    capped_body,
    mac,
    session_payload,
    signed_in_user,
)

ADMIN = frozenset({"admin"})
APPROVERS = frozenset({"approver", "admin"})
ANYONE = frozenset[str]()
MAX_FORM = 256 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {**PAGE_HEADERS, "Content-Security-Policy": CSP}
# /oauth/authorize ends by sending the browser to the agent's redirect URI after a form
# post, which `form-action 'self'` would block: its pages leave that one directive out.
AUTHORIZE_HEADERS = {**HEADERS, "Content-Security-Policy": CSP.replace("form-action 'self'; ", "")}
_HERE = Path(__file__).parent
env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInNeeded(Exception):
    """No (valid) session: the page sends the browser to the sign-in form."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in person and what their roles let them see."""

    user: User
    tenant: Tenant
    csrf: str

    @property
    def roles(self) -> set[str]:
        return set(self.user.roles)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.user.roles

    @property
    def is_approver(self) -> bool:
        return bool(self.roles & APPROVERS)

    def nav(self) -> list[tuple[str, str]]:
        """The sections this person may open, in the order of the page header."""
        items = []
        if self.is_approver:
            items.append(("approvals", "Approvals"))
        items += [("delegations", "My delegations"), ("connections", "Connections"),
                  ("agents", "Agents")]  # fmt: skip
        if self.is_admin:
            items += [("audit", "Audit"), ("policies", "Policies")]
        return items


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def cid(request: Request) -> str:
    return correlation_id(request.scope)


def csrf_token(runtime: Runtime, request: Request) -> str:
    return mac(runtime, "console-csrf", session_payload(request))


async def viewer(request: Request, roles: Iterable[str] = ANYONE) -> Viewer:
    """The signed-in person, if their roles reach this page (any of `roles`)."""
    runtime = runtime_of(request)
    user = await signed_in_user(request, runtime)
    if user is None:
        raise SignInNeeded
    wanted = set(roles)
    if wanted and not wanted & set(user.roles):
        raise Forbidden("your role does not reach this page")
    tenant = await runtime.identity_store.find_tenant(user.tenant_id)
    return Viewer(user, tenant, csrf_token(runtime, request))


def same_origin(request: Request) -> None:
    """Refuse a form posted from another site, whatever token it carries."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("a console form is posted from the console only")
    issuer = runtime_of(request).settings.issuer
    if site is None and origin is not None and origin != _origin(issuer):
        raise Forbidden("a console form is posted from the console only")


def printable(value: str) -> str:
    """Text a person could have typed: no NUL or other control characters (PostgreSQL
    cannot even store a NUL), else a clear 400 rather than a database error."""
    if any((ord(c) < 32 and c not in "\t\n\r") or c == "\x7f" for c in value):
        raise InvalidInput("the text holds control characters")
    return value


async def plain_request(request: Request) -> None:
    """Every console route: a path or query with control characters is refused up front."""
    printable(request.url.path)
    for key, value in request.query_params.multi_items():
        printable(key)
        printable(value)


async def form(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token and origin are checked."""
    same_origin(request)
    runtime = runtime_of(request)
    try:
        body = await capped_body(request, MAX_FORM)
    except TooLarge as exc:
        raise InvalidInput(f"the form is at most {MAX_FORM // 1024} KiB") from exc
    try:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=100))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("the form cannot be read") from exc
    sent = fields.get("csrf", "")
    if not hmac.compare_digest(sent.encode(), csrf_token(runtime, request).encode()):
        raise Forbidden("the form expired or did not come from this console; reload the page")
    for value in fields.values():
        printable(value)
    return fields


def _origin(issuer: str) -> str:
    scheme, _, rest = issuer.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def render(
    request: Request,
    who: Viewer | None,
    template: str,
    status: int = 200,
    headers: dict[str, str] = HEADERS,
    **context: Any,
) -> HTMLResponse:
    context.setdefault("request_message", MESSAGES.get(request.query_params.get("done", ""), ""))
    page = env.get_template(template).render(
        viewer=who, path=request.url.path, now=time.time(), **context
    )
    return HTMLResponse(page, status, headers=headers)


# What a page says after a form did its work (Post/Redirect/Get): a code in the query
# picks a fixed sentence, so a link cannot make a console page say anything else.
MESSAGES = {
    "signed-out": "You are signed out.",
    "approved": "Approved. The agent may now make this one call.",
    "denied": "Denied. The agent is told so.",
    "revoked": "Revoked. The agent's tokens for it stopped working.",
    "disconnected": "Disconnected. The platform's tokens are destroyed.",
    "connected": "Connected.",
    "suspended": "Suspended. Its tokens stopped working.",
    "resumed": "Resumed. It must get new tokens.",
    "decommissioned": "Decommissioned.",
    "pushed": "Saved as a new version and active now.",
    "rolled-back": "Rolled back. That version is active now.",
}


def redirect(to: str, done: str = "") -> Response:
    """303 after a POST (Post/Redirect/Get); `done` names the sentence the next page shows."""
    if done:
        to += ("&" if "?" in to else "?") + "done=" + quote(done)
    return RedirectResponse(to, 303, headers={"Cache-Control": "no-store"})


def safe_next(value: str) -> str:
    """Only a console path: never another site (`//evil`, `/\\evil`, `https:`)."""
    if value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console"


# formatting helpers for the templates ------------------------------------------------------
def _when(ts: float | None) -> str:
    return to_datetime(ts).strftime("%Y-%m-%d %H:%M UTC") if ts else "—"


def _iso(ts: float | None) -> str:
    return iso(ts or 0)


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    return span(time.time() - ts) + " ago"


def _left(ts: float) -> str:
    seconds = ts - time.time()
    return "expired" if seconds <= 0 else span(seconds) + " left"


def span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    days = seconds // 86400
    return "1 day" if days == 1 else f"{days} days"


def plain_action(action: str) -> str:
    """`crm:deals.delete` → "delete deals (crm)": what a person reads in an inbox."""
    system, _, rest = action.partition(":")
    if not rest:
        return action.replace("_", " ")
    thing, _, verb = rest.rpartition(".")
    if not thing:
        return f"{verb.replace('_', ' ')} ({system})"
    return f"{verb.replace('_', ' ')} {thing.replace('.', ' ').replace('_', ' ')} ({system})"


def plain_scope(scope: str) -> str:
    """`crm:write` → "change things in crm"; unknown shapes are shown as they are."""
    system, _, level = scope.rpartition(":")
    words = {"read": "read", "write": "create and change", "delete": "delete",
             "admin": "administer"}  # fmt: skip
    if system and level in words:
        return f"{words[level]} in {system}"
    return scope


env.filters.update(when=_when, iso=_iso, ago=_ago, left=_left, action=plain_action,
                   scope=plain_scope)  # fmt: skip
