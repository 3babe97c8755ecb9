"""Trusted issuers, role rights and delegations: who a user is, what they may do, and what
they handed to which agent. Shared by the CLI and (later) the consent screen and the API.

A delegation never exceeds the user's own rights: each scope must be one the user holds
through their roles (with the scope hierarchy). Token exchange later intersects again with
the agent's allowed scopes and what it requests.
"""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.errors import Conflict, InvalidInput, NotFound
from valetkey.identity import mandates
from valetkey.identity.models import ROLES, Delegation, TrustedIssuer, User
from valetkey.identity.rights import role_scopes, user_rights
from valetkey.identity.scopes import valid_scope
from valetkey.identity.service import IdentityService
from valetkey.ids import new_id

Events = Sequence[AuditEvent]


class DelegationStore(Protocol):
    async def add_issuer(self, issuer: TrustedIssuer, events: Events = ()) -> TrustedIssuer: ...
    async def list_issuers(self, tenant_id: str) -> list[TrustedIssuer]: ...
    async def set_role_scopes(
        self, tenant_id: str, role: str, scopes: list[str], events: Events = ()
    ) -> None: ...
    async def role_scopes(self, tenant_id: str) -> dict[str, list[str]]: ...
    async def create_delegation(
        self, delegation: Delegation, events: Events = ()
    ) -> Delegation: ...
    async def get_delegation(self, delegation_id: str) -> Delegation: ...
    async def list_delegations(
        self, tenant_id: str, user_id: str | None = None, agent_id: str | None = None
    ) -> list[Delegation]: ...
    async def revoke_delegation(
        self, delegation_id: str, now: float, events: Events = ()
    ) -> bool: ...


def _absolute_url(kind: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise InvalidInput(f"{kind} must be an absolute http(s) URL without a fragment")
    return value


class DelegationService:
    def __init__(
        self,
        identity: IdentityService,
        store: DelegationStore,
        clock: Clock,
        correlation_id: str,
    ) -> None:
        self._identity = identity
        self._store = store
        self._clock = clock
        self._cid = correlation_id

    def _ev(self, type: str, tenant_id: str, **fields: Any) -> AuditEvent:
        """An event for the store to commit together with the change it describes."""
        return AuditEvent(type, tenant_id, self._clock.now(), self._cid, **fields)

    @property
    def identity(self) -> IdentityService:
        return self._identity

    # trusted issuers -----------------------------------------------------------------------
    async def add_issuer(
        self, tenant_ref: str, issuer: str, jwks_uri: str, audience: str | None, claim: str
    ) -> TrustedIssuer:
        tenant = await self._identity.tenant(tenant_ref)
        if not claim or len(claim) > 64:
            raise InvalidInput("--claim names the assertion claim that holds the user's email")
        record = TrustedIssuer(
            new_id("iss"),
            tenant.id,
            _absolute_url("the issuer", issuer),
            _absolute_url("--jwks-uri", jwks_uri),
            audience or None,
            claim,
            self._clock.now(),
        )
        event = self._ev("issuer.added", tenant.id, data={"issuer": issuer, "jwks_uri": jwks_uri})
        await self._store.add_issuer(record, [event])
        return record

    async def list_issuers(self, tenant_ref: str) -> list[TrustedIssuer]:
        return await self._store.list_issuers((await self._identity.tenant(tenant_ref)).id)

    # roles ---------------------------------------------------------------------------------
    async def set_role(self, tenant_ref: str, role: str, scopes: Sequence[str]) -> list[str]:
        tenant = await self._identity.tenant(tenant_ref)
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        declared = {s for r in await self._identity.list_resources(tenant.id) for s in r.scopes}
        chosen = list(dict.fromkeys(s for value in scopes for s in value.split()))
        for scope in chosen:
            if not valid_scope(scope) or scope not in declared:
                raise InvalidInput(
                    f"scope {scope!r} is not declared by any of the tenant's resources"
                )
        event = self._ev("role.updated", tenant.id, data={"role": role, "scopes": chosen})
        await self._store.set_role_scopes(tenant.id, role, chosen, [event])
        return chosen

    async def roles(self, tenant_ref: str) -> dict[str, tuple[str, ...]]:
        tenant = await self._identity.tenant(tenant_ref)
        custom = await self._store.role_scopes(tenant.id)
        resources = await self._identity.list_resources(tenant.id)
        return {role: role_scopes(role, custom, resources) for role in ROLES}

    async def rights_of(self, user: User) -> set[str]:
        custom = await self._store.role_scopes(user.tenant_id)
        resources = await self._identity.list_resources(user.tenant_id)
        return user_rights(user.roles, custom, resources)

    # delegations ---------------------------------------------------------------------------
    async def create_delegation(
        self,
        tenant_ref: str,
        email: str,
        agent_ref: str,
        scopes: Sequence[str],
        resources: Sequence[str] = (),
        expires_in: int | None = None,
        mandate_actions: Sequence[str] = (),
        mandate_locations: Sequence[str] = (),
        sub_agents: Sequence[str] = (),
    ) -> Delegation:
        """An admin's (or the consent screen's) grant from a user to an agent; never wider
        than the user's own rights. `sub_agents` may receive the work in a chain."""
        tenant = await self._identity.tenant(tenant_ref)
        user = await self._identity.user(tenant.id, email)
        if user.status != "active":
            raise InvalidInput("a deactivated user cannot delegate")
        agent = await self._identity.agent(agent_ref, tenant.id)
        if agent.status == "decommissioned":
            raise Conflict("the agent is decommissioned")
        chosen = tuple(dict.fromkeys(s for value in scopes for s in value.split()))
        if not chosen:
            raise InvalidInput("a delegation grants at least one scope (--scope)")
        rights = await self.rights_of(user)
        for scope in chosen:
            if scope not in rights:
                raise InvalidInput(f"{user.email} does not hold {scope!r}, so cannot delegate it")
            if scope in tenant.settings.admin_only_scopes and "admin" not in user.roles:
                raise InvalidInput(f"only an admin may delegate {scope!r} in this tenant")
            if scope in tenant.settings.blocked_scopes:
                raise InvalidInput(f"scope {scope!r} is blocked by the tenant's admin")
        known = {r.uri for r in await self._identity.list_resources(tenant.id)}
        for uri in resources:
            if uri not in known:
                raise InvalidInput(f"unknown resource {uri!r}")
        if expires_in is not None and expires_in <= 0:
            raise InvalidInput("--expires must be in the future")
        if bool(mandate_actions) != bool(mandate_locations):
            raise InvalidInput("a mandate template names both actions and locations")
        try:
            mandate = mandates.template(mandate_actions, mandate_locations)
        except mandates.MandateError as exc:
            raise InvalidInput(str(exc)) from exc
        helpers = []
        for ref in sub_agents:
            helper = await self._identity.agent(ref, tenant.id)
            if helper.id == agent.id:
                raise InvalidInput("an agent is not its own sub-agent")
            helpers.append(helper.id)
        now = self._clock.now()
        delegation = Delegation(
            id=new_id("dlg"),
            tenant_id=tenant.id,
            user_id=user.id,
            agent_id=agent.id,
            scopes=chosen,
            resources=tuple(dict.fromkeys(resources)),
            status="active",
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
            mandate=mandate.to_detail() if mandate else None,
            sub_agents=tuple(dict.fromkeys(helpers)),
        )
        event = self._ev(
            "delegation.created",
            tenant.id,
            agent_id=agent.id,
            user_id=user.id,
            data={
                "delegation_id": delegation.id,
                "scopes": list(chosen),
                "resources": list(delegation.resources),
                "mandate": delegation.mandate,
                "sub_agents": list(delegation.sub_agents),
            },
        )
        await self._store.create_delegation(delegation, [event])
        return delegation

    async def list_delegations(
        self, tenant_ref: str, email: str | None = None, agent_ref: str | None = None
    ) -> list[Delegation]:
        tenant = await self._identity.tenant(tenant_ref)
        user_id = (await self._identity.user(tenant.id, email)).id if email else None
        agent_id = (await self._identity.agent(agent_ref, tenant.id)).id if agent_ref else None
        return await self._store.list_delegations(tenant.id, user_id, agent_id)

    async def revoke_delegation(
        self, delegation_id: str, tenant_ref: str | None = None
    ) -> Delegation:
        delegation = await self._store.get_delegation(delegation_id)
        if (
            tenant_ref is not None
            and delegation.tenant_id != (await self._identity.tenant(tenant_ref)).id
        ):
            raise NotFound(f"no delegation {delegation_id!r} in this tenant")
        now = self._clock.now()
        event = self._ev(
            "delegation.revoked",
            delegation.tenant_id,
            agent_id=delegation.agent_id,
            user_id=delegation.user_id,
            data={"delegation_id": delegation.id},
        )
        if await self._store.revoke_delegation(delegation.id, now, [event]):
            return replace(delegation, status="revoked", revoked_at=now)
        return delegation
