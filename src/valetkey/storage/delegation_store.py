"""Trusted issuers, role → scope mappings and delegations in SQL."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError

from valetkey.audit.events import AuditEvent
from valetkey.errors import Conflict, NotFound
from valetkey.identity.models import Delegation, TrustedIssuer, User
from valetkey.storage import rows
from valetkey.storage.audit_store import append_in
from valetkey.storage.hot_path import HotReadStore
from valetkey.storage.identity_store import bump_tenant_version
from valetkey.storage.tables import delegations, issuers, role_scopes, users

Events = Sequence[AuditEvent]


def _issuer(row: Any) -> TrustedIssuer:
    return TrustedIssuer(
        row.id, row.tenant_id, row.issuer, row.jwks_uri, row.audience, row.claim, row.created_at,
        getattr(row, "login_client_id", None), getattr(row, "login_label", None),
    )  # fmt: skip


def _delegation(row: Any) -> Delegation:
    return Delegation(
        id=row.id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        agent_id=row.agent_id,
        scopes=tuple(row.scopes),
        resources=tuple(row.resources),
        status=row.status,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        mandate=row.mandate,
        sub_agents=tuple(row.sub_agents or ()),
    )


class SqlDelegationStore(HotReadStore):
    async def add_issuer(self, issuer: TrustedIssuer, events: Events = ()) -> TrustedIssuer:
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    issuers.insert().values(
                        id=issuer.id,
                        tenant_id=issuer.tenant_id,
                        issuer=issuer.issuer,
                        jwks_uri=issuer.jwks_uri,
                        audience=issuer.audience,
                        claim=issuer.claim,
                        created_at=issuer.created_at,
                    )
                )
                await bump_tenant_version(conn, issuer.tenant_id)
                await append_in(conn, self._db.is_sqlite, events)
        except IntegrityError as exc:
            raise Conflict(f"issuer {issuer.issuer!r} is already trusted by this tenant") from exc
        return issuer

    async def list_issuers(self, tenant_id: str) -> list[TrustedIssuer]:
        found = await self._select(issuers, tenant_id=tenant_id)
        return sorted((_issuer(r) for r in found), key=lambda i: i.issuer)

    async def user_by_email(self, tenant_id: str, email: str) -> User | None:
        found = await self._select(users, tenant_id=tenant_id, email=email)
        return rows.user(found[0]) if found else None

    async def live_delegations(
        self, tenant_id: str, user_id: str, agent_id: str, now: float
    ) -> list[Delegation]:
        found = await self.list_delegations(tenant_id, user_id, agent_id)
        return [d for d in found if d.live(now)]

    async def user_by_id(self, user_id: str) -> User | None:
        found = await self._select(users, id=user_id)
        return rows.user(found[0]) if found else None

    async def delegation_by_id(self, delegation_id: str) -> Delegation | None:
        found = await self._select(delegations, id=delegation_id)
        return _delegation(found[0]) if found else None

    async def set_role_scopes(
        self, tenant_id: str, role: str, scopes: list[str], events: Events = ()
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                role_scopes.delete().where(
                    role_scopes.c.tenant_id == tenant_id, role_scopes.c.role == role
                )
            )
            await conn.execute(
                role_scopes.insert().values(tenant_id=tenant_id, role=role, scopes=scopes)
            )
            await bump_tenant_version(conn, tenant_id)
            await append_in(conn, self._db.is_sqlite, events)

    async def role_scopes(self, tenant_id: str) -> dict[str, list[str]]:
        return {
            r.role: list(r.scopes) for r in await self._select(role_scopes, tenant_id=tenant_id)
        }

    async def create_delegation(self, delegation: Delegation, events: Events = ()) -> Delegation:
        async with self._db.write() as conn:
            await conn.execute(
                delegations.insert().values(
                    id=delegation.id,
                    tenant_id=delegation.tenant_id,
                    user_id=delegation.user_id,
                    agent_id=delegation.agent_id,
                    scopes=list(delegation.scopes),
                    resources=list(delegation.resources),
                    status=delegation.status,
                    created_at=delegation.created_at,
                    expires_at=delegation.expires_at,
                    revoked_at=delegation.revoked_at,
                    mandate=delegation.mandate,
                    sub_agents=list(delegation.sub_agents) or None,
                )
            )
            await append_in(conn, self._db.is_sqlite, events)
        return delegation

    async def get_delegation(self, delegation_id: str) -> Delegation:
        found = await self.delegation_by_id(delegation_id)
        if found is None:
            raise NotFound(f"no delegation {delegation_id!r}")
        return found

    async def list_delegations(
        self, tenant_id: str, user_id: str | None = None, agent_id: str | None = None
    ) -> list[Delegation]:
        equals = {"tenant_id": tenant_id, "user_id": user_id, "agent_id": agent_id}
        found = await self._select(delegations, **{k: v for k, v in equals.items() if v})
        return sorted((_delegation(r) for r in found), key=lambda d: (d.created_at, d.id))

    async def revoke_delegation(self, delegation_id: str, now: float, events: Events = ()) -> bool:
        """Mark revoked (with its events); False, and no events, when it already was."""
        async with self._db.write() as conn:
            result = await conn.execute(
                delegations.update()
                .where(delegations.c.id == delegation_id, delegations.c.status == "active")
                .values(status="revoked", revoked_at=now)
            )
            if result.rowcount:
                await append_in(conn, self._db.is_sqlite, events)
        return bool(result.rowcount)
