"""The refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700
§4.14.2): every use spends the token and issues the next one of its family in one
transaction; presenting a spent one revokes the family and its access tokens.

A refresh never outlives its session's start (`expires_at` is fixed at the first token),
never widens the scope or changes the audience, and stops working the moment the user is
deactivated, the consent is revoked or the agent was suspended after the session began.
"""

from valetkey.oauth import sessions
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

GRANT_TYPE = "refresh_token"


class RefreshTokenGrant:
    grant_type = GRANT_TYPE
    parameters = frozenset({"refresh_token", "resource", "scope"})

    def __init__(
        self, sessions_: sessions.SessionStore, store: DelegatedStore, *, default_lifetime: int
    ) -> None:
        self._sessions = sessions_
        self._store = store
        self._default_lifetime = default_lifetime

    async def handle(self, request: TokenRequest) -> AccessTokenSpec:
        client = request.context.client
        token = request.params.get("refresh_token")
        if not token:
            raise InvalidRequest("refresh_token is required")
        record = await self._sessions.refresh_record(sessions.digest(token))
        if record is None or record.client_id != client.id:
            raise InvalidGrant("unknown refresh token")
        if record.status == "used":
            await sessions.revoke_reused(
                self._sessions, record.family_id, record.tenant_id, request.now,
                request.correlation_id, client.id, record.user_id,
            )  # fmt: skip
            raise InvalidGrant("the refresh token was already used: the session is revoked")
        if record.status != "active":
            raise InvalidGrant("the session was revoked")
        if record.expires_at <= request.now:
            raise InvalidGrant("the session has expired: ask the user again")
        if record.generation != client.token_generation:
            raise InvalidGrant("the session began before the agent was suspended")
        if record.dpop_jkt is not None and request.dpop_jkt != record.dpop_jkt:
            raise InvalidDPoPProof("the refresh token is bound to another DPoP key")
        if any(uri != record.resource for uri in request.resources_requested):
            raise InvalidTarget("a session keeps its resource")
        user = active_user(await self._store.user_by_id(record.user_id), record.tenant_id)
        delegation = await live_delegation(
            self._store, record.delegation_id, client.id, request.now
        )
        scopes = await session_scopes(self._store, request, user, delegation, record.scopes)
        plan = RefreshPlan(
            record.family_id,
            user.id,
            record.delegation_id,
            record.expires_at,
            previous=record.digest,
            generation=record.generation,
            scopes=record.scopes,
        )
        return session_spec(
            request, user, delegation, record.resource, scopes, record.mandate, plan,
            "token.refreshed", self._default_lifetime,
        )  # fmt: skip
