"""Identity records in SQL. Implements `valetkey.identity.ports.IdentityStore`."""

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from valetkey.audit.events import AuditEvent
from valetkey.errors import Conflict, NotFound
from valetkey.identity.models import Client, Resource, Tenant, TenantSettings, User
from valetkey.storage import rows
from valetkey.storage.audit_store import append_in
from valetkey.storage.database import Database
from valetkey.storage.tables import clients, resources, tenants, users

Events = Sequence[AuditEvent]


async def bump_tenant_version(conn: Any, tenant_id: str) -> None:
    """Tenant configuration changed (resources, roles, issuers): every node's cache of it
    reloads on its next request, which reads the version with the client anyway."""
    await conn.execute(
        tenants.update().where(tenants.c.id == tenant_id).values(version=tenants.c.version + 1)
    )


class SqlIdentityStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # tenants -------------------------------------------------------------------------------
    async def create_tenant(self, tenant: Tenant, events: Events = ()) -> Tenant:
        values = {
            "id": tenant.id,
            "name": tenant.name,
            "settings": tenant.settings.to_json(),
            "version": tenant.version,
            "created_at": tenant.created_at,
        }
        await self._insert(tenants, values, f"tenant {tenant.name!r} already exists", events)
        return tenant

    async def find_tenant(self, ref: str) -> Tenant:
        column = tenants.c.id if ref.startswith("ten_") else tenants.c.name
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(tenants).where(column == ref))).first()
        if row is None:
            raise NotFound(f"no tenant {ref!r}")
        return rows.tenant(row)

    async def list_tenants(self) -> list[Tenant]:
        async with self._db.read() as conn:
            result = await conn.execute(sa.select(tenants).order_by(tenants.c.created_at))
            return [rows.tenant(r) for r in result]

    async def update_tenant_settings(
        self, tenant_id: str, settings: TenantSettings, events: Events = ()
    ) -> Tenant:
        async with self._db.write() as conn:
            await conn.execute(
                tenants.update()
                .where(tenants.c.id == tenant_id)
                .values(settings=settings.to_json(), version=tenants.c.version + 1)
            )
            row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).one()
            await append_in(conn, self._db.is_sqlite, events)
        return rows.tenant(row)

    # users ---------------------------------------------------------------------------------
    async def create_user(self, user: User, events: Events = ()) -> User:
        values = {
            "id": user.id,
            "tenant_id": user.tenant_id,
            "email": user.email,
            "roles": list(user.roles),
            "status": user.status,
            "created_at": user.created_at,
            "updated_at": user.created_at,
        }
        await self._insert(
            users, values, f"user {user.email!r} already exists in this tenant", events
        )
        return user

    async def find_user(self, tenant_id: str, email: str) -> User:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(users).where(users.c.tenant_id == tenant_id, users.c.email == email)
                )
            ).first()
        if row is None:
            raise NotFound(f"no user {email!r} in this tenant")
        return rows.user(row)

    async def get_user(self, user_id: str) -> User:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
        if row is None:
            raise NotFound(f"no user {user_id!r}")
        return rows.user(row)

    async def list_users(self, tenant_id: str) -> list[User]:
        async with self._db.read() as conn:
            result = await conn.execute(
                sa.select(users).where(users.c.tenant_id == tenant_id).order_by(users.c.email)
            )
            return [rows.user(r) for r in result]

    async def password_hash(self, user_id: str) -> str | None:
        async with self._db.read() as conn:
            stored = await conn.scalar(
                sa.select(users.c.password_hash).where(users.c.id == user_id)
            )
        return str(stored) if stored else None

    async def set_password_hash(
        self, user: User, password_hash: str, now: float, events: Events = ()
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                users.update()
                .where(users.c.id == user.id)
                .values(password_hash=password_hash, updated_at=now)
            )
            await append_in(conn, self._db.is_sqlite, events)

    async def set_signed_out(self, user: User, now: float, events: Events = ()) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                users.update().where(users.c.id == user.id).values(signed_out_at=now)
            )
            await append_in(conn, self._db.is_sqlite, events)

    async def deactivate_user(
        self, user: User, now: float, events_for: Callable[[list[Client]], Events]
    ) -> tuple[User, list[Client]]:
        sponsored = clients.c.sponsor_id == user.id
        async with self._db.write() as conn:
            await conn.execute(
                users.update()
                .where(users.c.id == user.id)
                .values(status="deactivated", updated_at=now)
            )
            await conn.execute(
                clients.update()
                .where(sponsored, clients.c.status != "decommissioned")
                .values(needs_sponsor=True, updated_at=now)
            )
            result = await conn.execute(
                sa.select(clients).where(sponsored, clients.c.needs_sponsor == sa.true())
            )
            flagged = [rows.client(r) for r in result]
            await append_in(conn, self._db.is_sqlite, events_for(flagged))
        return replace(user, status="deactivated"), flagged

    # resources -----------------------------------------------------------------------------
    async def create_resource(self, resource: Resource, events: Events = ()) -> Resource:
        values = {
            "id": resource.id,
            "tenant_id": resource.tenant_id,
            "uri": resource.uri,
            "scopes": list(resource.scopes),
            "implies": {k: list(v) for k, v in resource.implies.items()},
            "created_at": resource.created_at,
        }
        try:
            async with self._db.write() as conn:
                await conn.execute(resources.insert().values(**values))
                await bump_tenant_version(conn, resource.tenant_id)
                await append_in(conn, self._db.is_sqlite, events)
        except IntegrityError as exc:
            raise Conflict(f"resource {resource.uri!r} already exists in this tenant") from exc
        return resource

    async def list_resources(self, tenant_id: str) -> list[Resource]:
        async with self._db.read() as conn:
            result = await conn.execute(
                sa.select(resources)
                .where(resources.c.tenant_id == tenant_id)
                .order_by(resources.c.uri)
            )
            return [rows.resource(r) for r in result]

    # clients (agents and service clients) ---------------------------------------------------
    async def create_client(self, client: Client, events: Events = ()) -> Client:
        label = "agent" if client.is_agent else "client"
        await self._insert(
            clients, rows.client_values(client), f"{label} {client.name!r} already exists", events
        )
        return client

    async def get_client(self, client_id: str) -> Client:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(clients).where(clients.c.id == client_id))).first()
        if row is None:
            raise NotFound(f"no client {client_id!r}")
        return rows.client(row)

    async def find_client_by_name(self, tenant_id: str, kind: str, name: str) -> Client:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(clients).where(
                        clients.c.tenant_id == tenant_id,
                        clients.c.kind == kind,
                        clients.c.name == name,
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"no {kind} {name!r} in this tenant")
        return rows.client(row)

    async def list_clients(self, tenant_id: str | None, kind: str) -> list[Client]:
        query = sa.select(clients).where(clients.c.kind == kind)
        if tenant_id is not None:
            query = query.where(clients.c.tenant_id == tenant_id)
        async with self._db.read() as conn:
            result = await conn.execute(query.order_by(clients.c.created_at))
            return [rows.client(r) for r in result]

    async def save_client(
        self, client: Client, expected_updated_at: float, events: Events = ()
    ) -> Client:
        """Compare-and-set: only if nobody changed the client since it was read, so a stale
        copy can never undo a suspension or erase a flag."""
        values = rows.client_values(client)
        async with self._db.write() as conn:
            result = await conn.execute(
                clients.update()
                .where(clients.c.id == client.id, clients.c.updated_at == expected_updated_at)
                .values(**values)
            )
            if result.rowcount != 1:
                raise Conflict(f"client {client.id!r} changed meanwhile; run the command again")
            await append_in(conn, self._db.is_sqlite, events)
        return client

    # helpers -------------------------------------------------------------------------------
    async def _insert(
        self, table: sa.Table, values: dict[str, Any], conflict: str, events: Events
    ) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(table.insert().values(**values))
                await append_in(conn, self._db.is_sqlite, events)
        except IntegrityError as exc:
            raise Conflict(conflict) from exc
