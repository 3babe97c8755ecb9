"""The authorization code grant (RFC 6749 §4.1) with PKCE (RFC 7636, S256 only).

The code comes from `/oauth/authorize` after the user logged in and, for an agent, gave
consent. It is spent exactly once; a second presentation revokes whatever the first one
produced (RFC 6749 §4.1.2). The result starts a session: an access token — the user's own
for a service client, or the agent's on the user's behalf (`act`) — and a refresh token.
"""

from valetkey.ids import new_id
from valetkey.oauth import pkce, sessions
from valetkey.oauth.context import TokenRequest
from valetkey.oauth.delegated import (
    DelegatedStore,
    active_user,
    live_delegation,
    session_scopes,
    session_spec,
)
from valetkey.oauth.dpop import InvalidDPoPProof
from valetkey.oauth.errors import InvalidGrant, InvalidRequest, InvalidTarget
from valetkey.oauth.grants import AccessTokenSpec, RefreshPlan

GRANT_TYPE = "authorization_code"


class AuthorizationCodeGrant:
    grant_type = GRANT_TYPE
    parameters = frozenset({"code", "redirect_uri", "code_verifier", "resource", "scope"})

    def __init__(
        self,
        issuer: str,
        codes: sessions.SessionStore,
        store: DelegatedStore,
        *,
        default_lifetime: int,
        refresh_lifetime: int,
    ) -> None:
        self._issuer = issuer
        self._codes = codes
        self._store = store
        self._default_lifetime = default_lifetime
        self._refresh_lifetime = refresh_lifetime

    async def handle(self, request: TokenRequest) -> AccessTokenSpec:
        params = request.params
        client = request.context.client
        if not params.get("code"):
            raise InvalidRequest("code is required")
        if not params.get("redirect_uri"):
            raise InvalidRequest("redirect_uri is required (the one sent to /oauth/authorize)")
        family = new_id("fam")
        use = await self._codes.use_code(
            sessions.digest(params["code"]), client.id, family, request.now
        )
        code = use.code
        if code is None:
            if use.reused_family is not None:
                await sessions.revoke_reused(
                    self._codes, use.reused_family, request.context.tenant.id,
                    request.now, request.correlation_id, client.id, None,
                )  # fmt: skip
                raise InvalidGrant("the code was already used; what it produced is revoked")
            raise InvalidGrant("unknown code, or issued to another client")
        if code.expires_at <= request.now:
            raise InvalidGrant("the code has expired")
        if params["redirect_uri"] != code.redirect_uri:
            raise InvalidGrant("redirect_uri differs from the authorization request's")
        if not pkce.verifier_matches(params.get("code_verifier"), code.code_challenge):
            raise InvalidGrant("code_verifier does not match the code_challenge (PKCE)")
        if code.dpop_jkt is not None and request.dpop_jkt != code.dpop_jkt:
            raise InvalidDPoPProof("the code is bound to another DPoP key (dpop_jkt)")
        audience = code.resource or self._issuer
        if any(uri != audience for uri in request.resources_requested):
            raise InvalidTarget("resource differs from the authorization request's")
        user = active_user(await self._store.user_by_id(code.user_id), code.tenant_id)
        delegation = await live_delegation(self._store, code.delegation_id, client.id, request.now)
        scopes = await session_scopes(self._store, request, user, delegation, code.scopes)
        ends = request.now + self._refresh_lifetime
        if delegation is not None and delegation.expires_at is not None:
            ends = min(ends, delegation.expires_at)
        plan = RefreshPlan(family, user.id, code.delegation_id, ends, scopes=code.scopes)
        return session_spec(
            request, user, delegation, audience, scopes, code.mandate, plan,
            "token.issued", self._default_lifetime,
        )  # fmt: skip
