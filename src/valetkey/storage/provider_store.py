"""Providers in SQL. The client secret is stored envelope-encrypted, bound to its row."""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from valetkey.audit.events import AuditEvent
from valetkey.errors import Conflict, NotFound
from valetkey.storage.audit_store import append_in
from valetkey.storage.database import Database
from valetkey.storage.identity_store import bump_tenant_version
from valetkey.storage.tables import providers
from valetkey.vault.cipher import Envelope
from valetkey.vault.providers import Provider, parse_config


def _context(provider_id: str) -> str:
    return f"providers/{provider_id}/client_secret"


class SqlProviderStore:
    def __init__(self, db: Database, envelope: Envelope) -> None:
        self._db = db
        self._envelope = envelope

    async def add(self, provider: Provider, secret: str, events: Sequence[AuditEvent]) -> None:
        sealed = self._envelope.encrypt(secret.encode(), _context(provider.id))
        try:
            async with self._db.write() as conn:
                await conn.execute(providers.insert().values(
                    id=provider.id, tenant_id=provider.tenant_id, name=provider.name,
                    config=provider.config.to_json(), client_id=provider.client_id,
                    client_secret=sealed, scopes=list(provider.scopes),
                    created_at=provider.created_at,
                ))  # fmt: skip
                await bump_tenant_version(conn, provider.tenant_id)  # gateways reload it
                await append_in(conn, self._db.is_sqlite, events)
        except IntegrityError as exc:
            raise Conflict(f"provider {provider.name!r} already exists in this tenant") from exc

    def _provider(self, row: Any) -> Provider:
        return Provider(row.id, row.tenant_id, row.name, parse_config(row.config),
                        row.client_id, tuple(row.scopes), row.created_at)  # fmt: skip

    async def find(self, tenant_id: str, name: str) -> Provider:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(providers).where(
                providers.c.tenant_id == tenant_id, providers.c.name == name))).first()  # fmt: skip
        if row is None:
            raise NotFound(f"no provider {name!r} in this tenant")
        return self._provider(row)

    async def by_id(self, tenant_id: str, provider_id: str) -> Provider:
        async with self._db.read() as conn:
            query = sa.select(providers).where(
                providers.c.tenant_id == tenant_id, providers.c.id == provider_id
            )
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound("the connection's provider was removed")
        return self._provider(row)

    async def client_secret(self, provider: Provider) -> str:
        async with self._db.read() as conn:
            sealed = await conn.scalar(
                sa.select(providers.c.client_secret).where(providers.c.id == provider.id)
            )
        if sealed is None:
            raise NotFound(f"no provider {provider.name!r}")
        return self._envelope.decrypt(str(sealed), _context(provider.id)).decode()

    async def list(self, tenant_id: str) -> list[Provider]:
        async with self._db.read() as conn:
            rows = await conn.execute(sa.select(providers).where(
                providers.c.tenant_id == tenant_id).order_by(providers.c.name))  # fmt: skip
            return [self._provider(r) for r in rows]

    async def remove(self, provider: Provider, events: Sequence[AuditEvent]) -> None:
        async with self._db.write() as conn:
            await conn.execute(providers.delete().where(providers.c.id == provider.id))
            await bump_tenant_version(conn, provider.tenant_id)
            await append_in(conn, self._db.is_sqlite, events)
