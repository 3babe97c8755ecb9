"""Identity operations shared by the CLI, the API and the console; each change is audited.

Lifecycle of an agent: active ⇄ suspended → decommissioned (final). Suspension and
decommissioning take effect on the next request everywhere: the token endpoint and
introspection read the agent's status on every call, and `revoked_before` kills every token
issued before the change.
"""

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.errors import Conflict, InvalidInput, NotFound
from valetkey.identity import redirect_uris as redirect_uris_
from valetkey.identity.models import (
    CLASSES,
    RIGHTS,
    ROLES,
    Client,
    Resource,
    SecretRecord,
    Tenant,
    User,
    valid_resource_uri,
)
from valetkey.identity.passwords import hash_password, password_matches
from valetkey.identity.ports import IdentityStore
from valetkey.identity.registration import (
    ClientMetadata,
    RegistrationError,
    agent_name,
    granted_scopes,
)
from valetkey.identity.scopes import check_acyclic, conventional_implications, valid_scope
from valetkey.identity.secrets import digest_secret, generate_secret
from valetkey.ids import new_id

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")


def _slug(kind: str, value: str) -> str:
    if not _SLUG.match(value):
        raise InvalidInput(
            f"{kind} name {value!r}: use lowercase letters, digits and hyphens (max 63)"
        )
    return value


def _email(value: str) -> str:
    value = value.strip().lower()
    if not _EMAIL.match(value):
        raise InvalidInput(f"not an email address: {value!r}")
    return value


def _scopes(values: Sequence[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for value in values:
        for scope in value.split():
            if not valid_scope(scope):
                raise InvalidInput(f"invalid scope {scope!r}")
            seen.setdefault(scope, None)
    return tuple(seen)


class IdentityService:
    def __init__(
        self,
        store: IdentityStore,
        clock: Clock,
        *,
        correlation_id: str,
        agent_domain: str = "agents",
        secret_grace: int = 86400,
    ) -> None:
        self._store = store
        self._clock = clock
        self._cid = correlation_id
        self._agent_domain = agent_domain
        self._secret_grace = secret_grace

    def _ev(self, type: str, tenant_id: str, **fields: Any) -> AuditEvent:
        """An event for the store to commit together with the change it describes."""
        return AuditEvent(
            type=type, tenant_id=tenant_id, ts=self._clock.now(), correlation_id=self._cid, **fields
        )

    # tenants -------------------------------------------------------------------------------
    async def create_tenant(self, name: str) -> Tenant:
        tenant = Tenant(new_id("ten"), _slug("tenant", name), self._clock.now())
        await self._store.create_tenant(
            tenant, [self._ev("tenant.created", tenant.id, data={"name": tenant.name})]
        )
        return tenant

    async def tenant(self, ref: str) -> Tenant:
        return await self._store.find_tenant(ref)

    async def list_tenants(self) -> list[Tenant]:
        return await self._store.list_tenants()

    async def set_tenant(
        self,
        ref: str,
        *,
        token_lifetime: int | None = None,
        max_token_lifetime: int | None = None,
        require_dpop: bool | None = None,
        admin_only_scopes: Sequence[str] = (),
        block_scopes: Sequence[str] = (),
        unblock_scopes: Sequence[str] = (),
        self_approval_classes: Sequence[str] | None = None,
        default_tenant: bool | None = None,
        auto_approve_clients: bool | None = None,
        registration_scopes: Sequence[str] | None = None,
    ) -> Tenant:
        tenant = await self.tenant(ref)
        settings = tenant.settings
        if default_tenant:  # one default: the others stop being it
            for other in await self.list_tenants():
                if other.id != tenant.id and other.settings.default_tenant:
                    await self._store.update_tenant_settings(
                        other.id, replace(other.settings, default_tenant=False),
                        [self._ev("tenant.updated", other.id, data={"default_tenant": False})],
                    )  # fmt: skip
        if default_tenant is not None:
            settings = replace(settings, default_tenant=default_tenant)
        if auto_approve_clients is not None:
            settings = replace(settings, auto_approve_clients=auto_approve_clients)
        if registration_scopes is not None:
            settings = replace(settings, registration_scopes=_scopes(registration_scopes))
        if self_approval_classes is not None:
            wrong = [c for c in self_approval_classes if c not in CLASSES and c != "none"]
            if wrong:
                raise InvalidInput(f"unknown class {wrong[0]!r}: use {', '.join(CLASSES)} or none")
            chosen = tuple(dict.fromkeys(c for c in self_approval_classes if c != "none"))
            settings = replace(settings, self_approval_classes=chosen)
        if require_dpop is not None:
            settings = replace(settings, require_dpop=require_dpop)
        if admin_only_scopes:
            added = _scopes(admin_only_scopes)
            settings = replace(
                settings,
                admin_only_scopes=tuple(dict.fromkeys((*settings.admin_only_scopes, *added))),
            )
        if block_scopes or unblock_scopes:
            blocked = dict.fromkeys((*settings.blocked_scopes, *_scopes(block_scopes)))
            for scope in _scopes(unblock_scopes):
                blocked.pop(scope, None)
            settings = replace(settings, blocked_scopes=tuple(blocked))
        if max_token_lifetime is not None:
            if not 60 <= max_token_lifetime <= 3600:
                raise InvalidInput("max token lifetime must be between 1 minute and 60 minutes")
            settings = replace(settings, max_token_lifetime=max_token_lifetime)
        if token_lifetime is not None:
            if not 30 <= token_lifetime <= settings.max_token_lifetime:
                raise InvalidInput("token lifetime must be between 30 s and the maximum")
            settings = replace(settings, token_lifetime=token_lifetime)
        updated = await self._store.update_tenant_settings(
            tenant.id, settings, [self._ev("tenant.updated", tenant.id, data=settings.to_json())]
        )
        return updated

    # users ---------------------------------------------------------------------------------
    async def create_user(self, tenant_ref: str, email: str, roles: Sequence[str]) -> User:
        tenant = await self.tenant(tenant_ref)
        roles = tuple(dict.fromkeys(roles or ["member"]))
        for role in roles:
            if role not in ROLES:
                raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        user = User(new_id("usr"), tenant.id, _email(email), roles, "active", self._clock.now())
        await self._store.create_user(
            user,
            [self._ev("user.created", tenant.id, user_id=user.id, data={"roles": list(roles)})],
        )
        return user

    async def user(self, tenant_ref: str, email: str) -> User:
        tenant = await self.tenant(tenant_ref)
        return await self._store.find_user(tenant.id, _email(email))

    async def user_by_id(self, user_id: str) -> User:
        return await self._store.get_user(user_id)

    async def list_users(self, tenant_ref: str) -> list[User]:
        return await self._store.list_users((await self.tenant(tenant_ref)).id)

    async def check_login(self, tenant_id: str, email: str, password: str) -> User | None:
        """The active user these credentials name, or None — with the same argon2id work
        whether the user exists or not, off the event loop (it takes tens of ms)."""
        try:
            user: User | None = await self._store.find_user(tenant_id, _email(email))
        except (NotFound, InvalidInput):
            user = None
        stored = await self._store.password_hash(user.id) if user is not None else None
        ok = await asyncio.to_thread(password_matches, password[:1024], stored)
        return user if ok and user is not None and user.status == "active" else None

    async def set_password(self, tenant_ref: str, email: str, password: str) -> User:
        """Set a user's password for ValetKey's own login (argon2id; never logged)."""
        user = await self.user(tenant_ref, email)
        if user.status != "active":
            raise InvalidInput("the user is deactivated")
        event = self._ev("user.password_set", user.tenant_id, user_id=user.id)
        await self._store.set_password_hash(
            user, hash_password(password), self._clock.now(), [event]
        )
        return user

    async def sign_out(self, user: User) -> float:
        """End every session the user holds (a signed cookie cannot be recalled, so the
        user row says from when on they count)."""
        now = self._clock.now()
        event = self._ev("user.logged_out", user.tenant_id, user_id=user.id)
        await self._store.set_signed_out(user, now, [event])
        return now

    async def deactivate_user(self, tenant_ref: str, email: str) -> tuple[User, list[Client]]:
        """Deactivate a user; the agents they sponsor keep working, flagged `needs_sponsor`."""
        user = await self.user(tenant_ref, email)
        if user.status == "deactivated":
            return user, []

        def events(flagged: list[Client]) -> list[AuditEvent]:
            return [
                self._ev("user.deactivated", user.tenant_id, user_id=user.id),
                *(
                    self._ev(
                        "agent.flagged",
                        agent.tenant_id,
                        agent_id=agent.id,
                        user_id=user.id,
                        reason="needs_sponsor: the sponsor was deactivated",
                    )
                    for agent in flagged
                ),
            ]

        return await self._store.deactivate_user(user, self._clock.now(), events)

    # resources -----------------------------------------------------------------------------
    async def create_resource(
        self, tenant_ref: str, uri: str, scopes: Sequence[str], implications: Sequence[str] = ()
    ) -> Resource:
        tenant = await self.tenant(tenant_ref)
        if not valid_resource_uri(uri):
            raise InvalidInput("a resource is an absolute URI without a fragment")
        declared = _scopes(scopes)
        if not declared:
            raise InvalidInput("a resource accepts at least one scope (--scope)")
        implies = {k: set(v) for k, v in conventional_implications(declared).items()}
        for item in implications:
            higher, sep, lower = item.partition(">")
            if not sep or higher not in declared or lower not in declared:
                raise InvalidInput(
                    f"--imply {item!r}: write HIGHER>LOWER with two of the resource's scopes"
                )
            implies.setdefault(higher, set()).add(lower)
        try:
            check_acyclic(implies)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        resource = Resource(
            new_id("res"),
            tenant.id,
            uri,
            declared,
            {k: tuple(sorted(v)) for k, v in sorted(implies.items())},
            self._clock.now(),
        )
        await self._store.create_resource(
            resource,
            [self._ev("resource.created", tenant.id, data={"uri": uri, "scopes": list(declared)})],
        )
        return resource

    async def list_resources(self, tenant_ref: str) -> list[Resource]:
        return await self._store.list_resources((await self.tenant(tenant_ref)).id)

    # agents --------------------------------------------------------------------------------
    async def create_agent(
        self,
        tenant_ref: str,
        name: str,
        sponsor_email: str,
        scopes: Sequence[str],
        *,
        jwks: dict[str, Any] | None = None,
        description: str = "",
        address: str | None = None,
        redirect_uris: Sequence[str] = (),
    ) -> tuple[Client, str | None]:
        """Create an agent; returns it and its client secret (None when it uses keys)."""
        tenant = await self.tenant(tenant_ref)
        redirects = tuple(dict.fromkeys(redirect_uris_.validate(u) for u in redirect_uris))
        sponsor = await self._store.find_user(tenant.id, _email(sponsor_email))
        if sponsor.status != "active":
            raise InvalidInput("the sponsor must be an active user of the tenant")
        now = self._clock.now()
        secret = None if jwks else generate_secret()
        agent = Client(
            id=new_id("agt"),
            tenant_id=tenant.id,
            kind="agent",
            name=_slug("agent", name),
            status="active",
            secrets=(SecretRecord(new_id("sec"), digest_secret(secret), now),) if secret else (),
            jwks=jwks,
            scopes=_scopes(scopes),
            sponsor_id=sponsor.id,
            address=address or f"{name}@{tenant.name}.{self._agent_domain}",
            description=description,
            created_at=now,
            updated_at=now,
            redirect_uris=redirects,
        )
        await self._store.create_client(
            agent,
            [
                self._ev(
                    "agent.created",
                    tenant.id,
                    agent_id=agent.id,
                    user_id=sponsor.id,
                    data={
                        "name": agent.name,
                        "scopes": list(agent.scopes),
                        "address": agent.address,
                        "redirect_uris": list(redirects),
                    },
                ),
                self._ev(
                    "credential.created",
                    tenant.id,
                    agent_id=agent.id,
                    data={"kind": "public_key", "kids": [k.get("kid") for k in jwks["keys"]]}
                    if jwks
                    else {"kind": "client_secret", "secret_id": agent.secrets[0].id},
                ),
            ],
        )
        return agent, secret

    async def agent(self, ref: str, tenant_ref: str | None = None) -> Client:
        """An agent by id, or by name within `tenant_ref`."""
        if ref.startswith("agt_"):
            try:
                agent = await self._store.get_client(ref)
            except NotFound:
                raise NotFound(f"no agent {ref!r}") from None
            if tenant_ref is not None and agent.tenant_id != (await self.tenant(tenant_ref)).id:
                raise NotFound(f"no agent {ref!r} in this tenant")
        elif tenant_ref is None:
            raise InvalidInput("give the agent's id (agt_…), or its name with --tenant")
        else:
            tenant = await self.tenant(tenant_ref)
            agent = await self._store.find_client_by_name(tenant.id, "agent", ref)
        if not agent.is_agent:
            raise NotFound(f"no agent {ref!r}")
        return agent

    async def list_agents(self, tenant_ref: str | None = None) -> list[Client]:
        tenant_id = (await self.tenant(tenant_ref)).id if tenant_ref else None
        return await self._store.list_clients(tenant_id, "agent")

    async def sponsor_of(self, agent: Client) -> User | None:
        return await self._store.get_user(agent.sponsor_id) if agent.sponsor_id else None

    async def default_tenant(self) -> Tenant | None:
        """The tenant self-registered clients join (`tenants set T --default-tenant`)."""
        found = [t for t in await self.list_tenants() if t.settings.default_tenant]
        return min(found, key=lambda t: t.created_at) if found else None

    async def register_document_client(self, url: str, meta: ClientMetadata, agent_id: str) -> str:
        """The agent of a client ID metadata document: registered on first sight like any
        self-registered client, its redirect URIs and name kept current afterwards (its
        status and scopes are the admin's)."""
        try:
            known = await self._store.get_client(agent_id)
        except NotFound:
            with contextlib.suppress(Conflict):  # a concurrent request registered it first
                await self.register_client(meta, agent_id=agent_id, source=url)
            return agent_id
        if known.redirect_uris != meta.redirect_uris:
            await self._store.save_client(
                replace(known, redirect_uris=meta.redirect_uris, updated_at=self._clock.now()),
                known.updated_at,
                [self._ev("agent.updated", known.tenant_id, agent_id=known.id,
                          data={"redirect_uris": list(meta.redirect_uris), "source": url})],
            )  # fmt: skip
        return agent_id

    async def register_client(
        self, meta: ClientMetadata, *, agent_id: str | None = None, source: str | None = None
    ) -> tuple[Client, str | None]:
        """A self-registered client (RFC 7591, or a metadata document at `source`): a
        `pending` agent of the default tenant, or an active one within the tenant's scope
        ceiling when it auto-approves."""
        tenant = await self.default_tenant()
        if tenant is None:
            raise RegistrationError(
                "invalid_client_metadata", "registration is closed (no default tenant)"
            )
        declared = {s for r in await self._store.list_resources(tenant.id) for s in r.scopes}
        scopes = granted_scopes(tenant, meta.scopes, declared)
        now = self._clock.now()
        secret = None if meta.public else generate_secret()
        status = "active" if tenant.settings.auto_approve_clients else "pending"
        name = agent_name(meta.name)
        agent = Client(
            id=agent_id or new_id("agt"), tenant_id=tenant.id, kind="agent", name=name,
            status=status,
            secrets=(SecretRecord(new_id("sec"), digest_secret(secret), now),) if secret else (),
            scopes=scopes, address=f"{name}@{tenant.name}.{self._agent_domain}",
            description=f"registered as {meta.name!r}" + (f" ({source or meta.client_uri})"
                                                            if source or meta.client_uri
                                                            else ""),
            needs_sponsor=True, created_at=now, updated_at=now,
            redirect_uris=meta.redirect_uris, public=meta.public,
        )  # fmt: skip
        await self._store.create_client(agent, [self._ev(
            "agent.registered", tenant.id, agent_id=agent.id,
            data={"name": name, "client_name": meta.name, "status": status,
                  "scopes": list(scopes), "public": meta.public,
                  "redirect_uris": list(meta.redirect_uris), "metadata_document": source},
        )])  # fmt: skip
        return agent, secret

    async def approve_agent(
        self, ref: str, tenant_ref: str | None, sponsor_email: str,
        scopes: Sequence[str] | None = None,
    ) -> Client:  # fmt: skip
        """A pending (self-registered) agent goes live with a sponsor, and optionally
        narrower scopes than it asked for."""
        agent = await self.agent(ref, tenant_ref)
        if agent.status != "pending":
            raise Conflict(f"agent is {agent.status}; only a pending agent is approved")
        sponsor = await self._store.find_user(agent.tenant_id, _email(sponsor_email))
        if sponsor.status != "active":
            raise InvalidInput("the sponsor must be an active user of the tenant")
        granted = agent.scopes if scopes is None else _scopes(scopes)
        if not set(granted) <= set(agent.scopes) and scopes is not None:
            declared = {s for r in await self._store.list_resources(agent.tenant_id)
                        for s in r.scopes}  # fmt: skip
            unknown = [s for s in granted if s not in declared]
            if unknown:
                raise InvalidInput(f"scope {unknown[0]!r} is not declared by any resource")
        return await self._store.save_client(
            replace(agent, status="active", sponsor_id=sponsor.id, needs_sponsor=False,
                    scopes=granted, updated_at=self._clock.now()),
            agent.updated_at,
            [self._ev("agent.approved", agent.tenant_id, agent_id=agent.id, user_id=sponsor.id,
                      data={"scopes": list(granted)})],
        )  # fmt: skip

    async def suspend_agent(self, ref: str, tenant_ref: str | None = None) -> Client:
        return await self._transition(ref, tenant_ref, "suspended", ("active",))

    async def resume_agent(self, ref: str, tenant_ref: str | None = None) -> Client:
        return await self._transition(ref, tenant_ref, "active", ("suspended",))

    async def decommission_agent(self, ref: str, tenant_ref: str | None = None) -> Client:
        return await self._transition(ref, tenant_ref, "decommissioned", ("active", "suspended"))

    async def _transition(
        self, ref: str, tenant_ref: str | None, status: str, allowed_from: tuple[str, ...]
    ) -> Client:
        agent = await self.agent(ref, tenant_ref)
        if agent.status == status:
            return agent
        if agent.status not in allowed_from:
            raise Conflict(f"agent is {agent.status}; it cannot become {status}")
        now = self._clock.now()
        changes: dict[str, Any] = {"status": status, "updated_at": now}
        if status != "active":
            changes["revoked_before"] = now  # tokens issued until now die with the change
        if status == "decommissioned":
            changes.update(secrets=(), jwks=None)  # credentials are destroyed, not kept
        verb = {"active": "resumed", "suspended": "suspended", "decommissioned": "decommissioned"}
        return await self._store.save_client(
            replace(agent, **changes),
            agent.updated_at,
            [self._ev(f"agent.{verb[status]}", agent.tenant_id, agent_id=agent.id)],
        )

    async def rotate_secret(
        self, ref: str, tenant_ref: str | None = None, grace: int | None = None
    ) -> tuple[Client, str]:
        """Issue a new secret; the previous ones keep working for `grace` seconds."""
        agent = await self.agent(ref, tenant_ref)
        if agent.status == "decommissioned":
            raise Conflict("agent is decommissioned; its credentials are gone for good")
        now = self._clock.now()
        until = now + (self._secret_grace if grace is None else grace)
        kept = tuple(
            replace(s, expires_at=min(s.expires_at or until, until))
            for s in agent.live_secrets(now)
        )
        secret = generate_secret()
        record = SecretRecord(new_id("sec"), digest_secret(secret), now)
        event = self._ev(
            "credential.rotated",
            agent.tenant_id,
            agent_id=agent.id,
            data={"secret_id": record.id, "previous_expire_at": until if kept else None},
        )
        updated = await self._store.save_client(
            replace(agent, secrets=(*kept, record), updated_at=now), agent.updated_at, [event]
        )
        return updated, secret

    async def set_sponsor(self, ref: str, email: str, tenant_ref: str | None = None) -> Client:
        agent = await self.agent(ref, tenant_ref)
        sponsor = await self._store.find_user(agent.tenant_id, _email(email))
        if sponsor.status != "active":
            raise InvalidInput("the sponsor must be an active user of the tenant")
        updated = await self._store.save_client(
            replace(
                agent, sponsor_id=sponsor.id, needs_sponsor=False, updated_at=self._clock.now()
            ),
            agent.updated_at,
            [
                self._ev(
                    "agent.sponsor_changed", agent.tenant_id, agent_id=agent.id, user_id=sponsor.id
                )
            ],
        )
        return updated

    # service clients (resource servers, gateways) ------------------------------------------
    async def create_service_client(
        self, tenant_ref: str, name: str, rights: Sequence[str], redirect_uris: Sequence[str] = ()
    ) -> tuple[Client, str]:
        """A resource server, gateway or user-facing app; with redirect URIs it signs users in
        at `/oauth/authorize` and gets their own tokens (no `act`)."""
        tenant = await self.tenant(tenant_ref)
        redirects = tuple(dict.fromkeys(redirect_uris_.validate(u) for u in redirect_uris))
        for right in rights:
            if right not in RIGHTS:
                raise InvalidInput(f"unknown right {right!r}: use one of {', '.join(RIGHTS)}")
        now = self._clock.now()
        secret = generate_secret()
        client = Client(
            id=new_id("cli"),
            tenant_id=tenant.id,
            kind="service",
            name=_slug("client", name),
            status="active",
            secrets=(SecretRecord(new_id("sec"), digest_secret(secret), now),),
            rights=tuple(dict.fromkeys(rights)),
            created_at=now,
            updated_at=now,
            redirect_uris=redirects,
        )
        await self._store.create_client(
            client,
            [
                self._ev(
                    "client.created",
                    tenant.id,
                    data={
                        "client_id": client.id,
                        "rights": list(client.rights),
                        "redirect_uris": list(redirects),
                    },
                )
            ],
        )
        return client, secret

    async def list_service_clients(self, tenant_ref: str) -> list[Client]:
        return await self._store.list_clients((await self.tenant(tenant_ref)).id, "service")
