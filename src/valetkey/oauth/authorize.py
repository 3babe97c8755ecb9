"""The authorization endpoint's rules (RFC 6749 §4.1, RFC 7636, RFC 9207, RFC 9700 §4.1):
which requests are valid and where an answer may go. The web layer adds login, consent
and HTML; this module decides.

The order matters: until the client and its redirect URI are known to match a
registration, an error is shown to the user and never redirected — an open redirector
would hand codes or phishing pages to anyone (RFC 9700 §4.11). After that, errors travel
back to the client on its redirect URI with `state` and `iss`.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from valetkey.identity import redirect_uris
from valetkey.identity.mandates import Mandate, MandateError, parse_authorization_details
from valetkey.identity.models import Client, Resource, Tenant
from valetkey.identity.scopes import closure, parse_scope_param
from valetkey.oauth import audience, pkce
from valetkey.oauth.context import ClientContext
from valetkey.oauth.errors import OAuthError

_JKT_RE = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_STATE = 1024
_SINGLE = frozenset(
    {"client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge",
     "code_challenge_method", "authorization_details", "dpop_jkt", "prompt", "resource"}
)  # fmt: skip


class AuthorizeError(Exception):
    """An error of the authorization request. `request` is None while the client or the
    redirect URI is unverified: then the user sees it, and nothing is redirected."""

    def __init__(
        self, error: str, description: str, request: "AuthorizationRequest | None" = None
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.request = request


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: Client
    tenant: Tenant
    redirect_uri: str
    state: str | None
    scopes: tuple[str, ...]
    audience: str
    resource: str | None
    code_challenge: str
    mandate: Mandate | None = None
    dpop_jkt: str | None = None
    prompt: str | None = None

    def redirect(self, issuer: str, **params: str) -> str:
        """`redirect_uri` with the answer appended to its query; `iss` per RFC 9207."""
        answer = {**params, "iss": issuer}
        if self.state is not None:
            answer["state"] = self.state
        parts = urlsplit(self.redirect_uri)
        query = (parts.query + "&" if parts.query else "") + urlencode(answer)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def single_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """RFC 6749 §3.1: parameters sent more than once are an error."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values and name in _SINGLE:
            raise AuthorizeError("invalid_request", f"parameter {name!r} is repeated")
        values[name] = value
    return values


def check_client(ctx: ClientContext | None, params: Mapping[str, str]) -> tuple[ClientContext, str]:
    """The client and the redirect URI, verified before anything may be redirected."""
    if ctx is not None and ctx.client.status == "pending":
        raise AuthorizeError("unauthorized_client", "this client awaits an admin's approval")
    if ctx is None or not ctx.client.active:
        raise AuthorizeError("invalid_client", "unknown or inactive client")
    uri = params.get("redirect_uri")
    if not ctx.client.redirect_uris:
        raise AuthorizeError("invalid_client", "this client has no registered redirect URI")
    if not uri:
        raise AuthorizeError("invalid_request", "redirect_uri is required")
    if not redirect_uris.matches(ctx.client.redirect_uris, uri):
        raise AuthorizeError("invalid_request", "redirect_uri is not registered for this client")
    return ctx, uri


def parse_request(
    ctx: ClientContext,
    redirect_uri: str,
    params: Mapping[str, str],
    resources: tuple[Resource, ...],
    issuer: str,
) -> AuthorizationRequest:
    """Everything after the redirect URI is trusted; errors here go back to the client."""
    state = params.get("state")
    client = ctx.client
    base = AuthorizationRequest(
        client, ctx.tenant, redirect_uri,
        state[:MAX_STATE] if state is not None else None, (), issuer, None, "",
    )  # fmt: skip

    def fail(error: str, description: str) -> AuthorizeError:
        return AuthorizeError(error, description, base)

    if state is not None and len(state) > MAX_STATE:
        raise fail("invalid_request", "state is too long")
    if not params.get("response_type"):
        raise fail("invalid_request", "response_type is required")
    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    try:
        challenge = pkce.check_challenge(
            params.get("code_challenge"), params.get("code_challenge_method")
        )
    except OAuthError as exc:
        raise fail(exc.error, exc.description) from exc
    requested = parse_scope_param(params.get("scope", "")) or None
    resource = params.get("resource") or None
    if not client.is_agent:  # a sign-in: the user's own token, for ValetKey itself
        if resource is not None:
            raise fail("invalid_target", "a sign-in token is for ValetKey itself: no resource")
        if requested is not None:
            raise fail("invalid_scope", "a sign-in token carries no scope; agents ask for those")
        chosen = audience.Grantable(issuer, (), None)
    else:
        if client.public and resource is None:  # MCP authorization: RFC 8707 is required
            raise fail("invalid_target", "a public client must name the resource it wants")
        if requested is not None:
            # RFC 6749 §3.3: grant what the client may hold of what it asked (MCP clients ask
            # for every scope the resource advertises); the token response says what it got.
            held = closure(client.scopes, audience.all_implications(resources))
            kept = [s for s in requested if s in held]
            if not kept:
                raise fail("invalid_scope", "this client may hold none of the requested scopes")
            requested = kept
        try:
            chosen = audience.select(
                resources, [resource] if resource else [], requested, client.scopes, issuer
            )
        except OAuthError as exc:
            raise fail(exc.error, exc.description) from exc
    try:
        raw = params.get("authorization_details")
        mandate = parse_authorization_details(raw) if raw else None
    except MandateError as exc:
        raise fail("invalid_authorization_details", str(exc)) from exc
    jkt = params.get("dpop_jkt")
    if jkt is not None and not _JKT_RE.fullmatch(jkt):
        raise fail("invalid_request", "dpop_jkt must be a JWK SHA-256 thumbprint")
    prompt = params.get("prompt")
    if prompt not in (None, "", "consent", "login"):
        raise fail("invalid_request", "prompt may be consent or login")
    return AuthorizationRequest(
        client, ctx.tenant, redirect_uri, base.state, chosen.scopes, chosen.audience,
        chosen.audience if chosen.resource else None, challenge, mandate, jkt, prompt or None,
    )  # fmt: skip
