"""What every token issued on behalf of a user has in common, whichever grant issues it
(token exchange, authorization code, refresh): the consent behind it, the user's rights,
and the rule that the effective scope is the intersection — never wider.
"""

from collections.abc import Sequence
from typing import Any, Protocol

from valetkey.identity.mandates import Mandate, parse_mandate
from valetkey.identity.models import Delegation, Resource, TrustedIssuer, User
from valetkey.identity.rights import user_rights
from valetkey.identity.scopes import closure, parse_scope_param
from valetkey.oauth.audience import all_implications
from valetkey.oauth.context import ClientContext, TokenRequest
from valetkey.oauth.errors import (
    InvalidAuthorizationDetails,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
)
from valetkey.oauth.grants import AccessTokenSpec, RefreshPlan
from valetkey.oauth.verification import actors


class DelegatedStore(Protocol):
    async def list_issuers(self, tenant_id: str) -> list[TrustedIssuer]: ...
    async def user_by_email(self, tenant_id: str, email: str) -> User | None: ...
    async def user_by_id(self, user_id: str) -> User | None: ...
    async def live_delegations(
        self, tenant_id: str, user_id: str, agent_id: str, now: float
    ) -> list[Delegation]: ...
    async def delegation_by_id(self, delegation_id: str) -> Delegation | None: ...
    async def role_scopes(self, tenant_id: str) -> dict[str, list[str]]: ...


class ClientLoader(Protocol):
    async def load_client_context(self, client_id: str) -> ClientContext | None: ...


def covering(delegations: Sequence[Delegation], uri: str) -> list[Delegation]:
    """The delegations that reach `uri`; none is `invalid_target`."""
    found = [d for d in delegations if d.reaches(uri)]
    if not found:
        raise InvalidTarget("the user did not delegate this resource to this agent")
    return found


async def rights_of(store: DelegatedStore, request: TokenRequest, user: User) -> set[str]:
    """The user's own rights: their roles' scopes (cached per tenant version)."""
    tenant = request.context.tenant
    roles = await request.cache.get(tenant, "role_scopes", lambda: store.role_scopes(tenant.id))
    return user_rights(user.roles, roles, request.tenant_resources)


def effective_scopes(
    resources: Sequence[Resource],
    rights: set[str],
    delegated: Sequence[str],
    allowed: Sequence[str],
) -> set[str]:
    """The user's rights ∩ what they delegated ∩ what the agent may hold (with implications)."""
    implies = all_implications(resources)
    return rights & closure(delegated, implies) & closure(allowed, implies)


def mandate_for(requested: Mandate | None, delegations: Sequence[Delegation]) -> Mandate | None:
    """The token's mandate: the one asked for, inside every mandate template of the
    delegations it draws on (their scopes are pooled, so their limits are too); without one,
    the first template."""
    templates = [parse_mandate(d.mandate) for d in delegations if d.mandate]
    if not templates:
        return requested
    chosen = requested or templates[0]
    for template in templates:
        reason = chosen.within(template)
        if reason:
            raise InvalidAuthorizationDetails(reason)
    return templates[0].narrowed(chosen) if requested else chosen


def active_user(user: User | None, tenant_id: str) -> User:
    if user is None or user.tenant_id != tenant_id:
        raise InvalidGrant("the subject is not a user of this tenant")
    if user.status != "active":
        raise InvalidGrant("the user is deactivated")
    return user


class Consent:
    """Does a token that names a user still stand? The user must be active; with agents
    acting, the user's delegation to the first actor must still reach the token's
    audience, and name every later actor as an allowed sub-agent, all of them active and
    none suspended since the token was issued (as an agent's own tokens stay dead)."""

    def __init__(self, store: DelegatedStore, clients: ClientLoader) -> None:
        self._store = store
        self._clients = clients

    async def subject_live(self, claims: dict[str, Any], now: float) -> bool:
        user = await self._store.user_by_id(str(claims["sub"]))
        if user is None or user.status != "active" or user.tenant_id != claims["tenant"]:
            return False
        if "act" not in claims:
            return True  # the user's own token
        chain = actors(claims["act"])
        if not chain or chain[0] != claims["client_id"]:
            return False
        delegations = await self._store.live_delegations(user.tenant_id, user.id, chain[-1], now)
        reaching = [d for d in delegations if d.reaches(str(claims["aud"]))]
        helpers = set(chain[:-1])
        if not any(helpers <= set(d.sub_agents) for d in reaching):
            return False
        for actor in chain[1:]:  # the outermost actor is the token's client, checked already
            ctx = await self._clients.load_client_context(actor)
            if ctx is None or not ctx.client.active:
                return False
            if claims.get("iat", 0) < ctx.client.revoked_before:
                return False  # handed on before this actor was suspended: dead after a resume
        return True


async def session_scopes(
    store: DelegatedStore,
    request: TokenRequest,
    user: User,
    delegation: Delegation | None,
    granted: Sequence[str],
) -> tuple[str, ...]:
    """What a delegated session may still hold now: the scopes it was granted, narrowed by
    `scope` if asked, and by today's rights and consent (a role may have lost a scope)."""
    requested = parse_scope_param(request.params.get("scope", "")) or None
    if requested is not None:
        for scope in requested:
            if scope not in granted:
                raise InvalidScope(f"scope {scope!r} was not granted to this session")
    rights = await rights_of(store, request, user)
    if delegation is not None:
        rights = effective_scopes(
            request.tenant_resources, rights, delegation.scopes, request.context.client.scopes
        )
    kept = tuple(s for s in (requested or granted) if s in rights)
    if granted and not kept:  # (a plain sign-in grants no scope and stays one)
        raise InvalidGrant("the user no longer holds any of this session's scopes")
    return kept


def session_spec(
    request: TokenRequest,
    user: User,
    delegation: Delegation | None,
    audience: str,
    scopes: tuple[str, ...],
    mandate: dict[str, Any] | None,
    refresh: RefreshPlan,
    event_type: str,
    default_lifetime: int,
) -> AccessTokenSpec:
    """An access token for a session: the user's own, or an agent's on their behalf."""
    client = request.context.client
    extra: dict[str, Any] = {}
    if client.is_agent:
        if delegation is None:
            raise InvalidGrant("no delegation: the user has not consented to this agent")
        extra["act"] = {"sub": client.id}
    if mandate:
        extra["authorization_details"] = [mandate]
    return AccessTokenSpec(
        subject=user.id,
        audience=audience,
        scopes=scopes,
        lifetime=request.context.tenant.settings.access_token_lifetime(default_lifetime),
        extra_claims=extra,
        event_type=event_type,
        user_id=user.id,
        refresh=refresh,
        mandate=mandate,
        response_extra={"authorization_details": [mandate]} if mandate else {},
    )


async def live_delegation(
    store: DelegatedStore, delegation_id: str | None, client_id: str, now: float
) -> Delegation | None:
    if delegation_id is None:
        return None
    found = await store.delegation_by_id(delegation_id)
    if found is None or not found.live(now) or found.agent_id != client_id:
        raise InvalidGrant("the user's consent for this session was revoked or has expired")
    return found
