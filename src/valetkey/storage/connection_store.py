"""Connections in SQL. Tokens are one envelope ciphertext per connection (a JSON object),
bound to the row; revoking destroys the ciphertext."""

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from valetkey.audit.events import AuditEvent
from valetkey.errors import NotFound
from valetkey.storage.audit_store import append_in
from valetkey.storage.database import Database
from valetkey.storage.tables import connections, providers
from valetkey.vault.cipher import Envelope
from valetkey.vault.connections import Connection, PlatformTokens


def token_context(connection_id: str) -> str:
    return f"connections/{connection_id}/tokens"


class SqlConnectionStore:
    def __init__(self, db: Database, envelope: Envelope) -> None:
        self._db = db
        self._envelope = envelope

    def _seal(self, connection_id: str, tokens: PlatformTokens) -> str:
        return self._envelope.encrypt(json.dumps(tokens.to_json()).encode(),
                                      token_context(connection_id))  # fmt: skip

    async def create(
        self, connection: Connection, tokens: PlatformTokens, events: Sequence[AuditEvent]
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(connections.insert().values(
                id=connection.id, tenant_id=connection.tenant_id,
                provider_id=connection.provider_id, owner_kind=connection.owner_kind,
                owner_id=connection.owner_id, tokens=self._seal(connection.id, tokens),
                status=connection.status, scopes=list(connection.scopes),
                expires_at=connection.expires_at, version=connection.version,
                created_at=connection.created_at, updated_at=connection.updated_at,
            ))  # fmt: skip
            await append_in(conn, self._db.is_sqlite, events)

    def _query(self) -> Any:
        return sa.select(connections, providers.c.name.label("provider_name")).join(
            providers, providers.c.id == connections.c.provider_id
        )

    @staticmethod
    def _connection(row: Any) -> Connection:
        return Connection(row.id, row.tenant_id, row.provider_id, row.provider_name,
                          row.owner_kind, row.owner_id, row.status, tuple(row.scopes),
                          row.expires_at, row.version, row.created_at, row.updated_at)  # fmt: skip

    async def get(self, connection_id: str) -> Connection:
        async with self._db.read() as conn:
            row = (
                await conn.execute(self._query().where(connections.c.id == connection_id))
            ).first()
        if row is None:
            raise NotFound(f"no connection {connection_id!r}")
        return self._connection(row)

    async def list_all(self, tenant_id: str) -> list[Connection]:
        async with self._db.read() as conn:
            rows = await conn.execute(self._query().where(connections.c.tenant_id == tenant_id)
                                      .order_by(connections.c.created_at))  # fmt: skip
            return [self._connection(r) for r in rows]

    async def owned_by(self, tenant_id: str, owner_kind: str, owner_id: str) -> list[Connection]:
        return [c for c in await self.list_all(tenant_id)
                if c.owner_kind == owner_kind and c.owner_id == owner_id]  # fmt: skip

    async def tokens(self, connection: Connection) -> PlatformTokens:
        async with self._db.read() as conn:
            sealed = await conn.scalar(
                sa.select(connections.c.tokens).where(connections.c.id == connection.id)
            )
        if sealed is None:
            raise NotFound("the connection holds no tokens (revoked)")
        plain = self._envelope.decrypt(str(sealed), token_context(connection.id))
        return PlatformTokens.from_json(json.loads(plain))

    async def revoke(
        self, connection: Connection, now: float, events: Sequence[AuditEvent]
    ) -> bool:
        """Destroy the ciphertext; False, and nothing written, when it already was."""
        async with self._db.write() as conn:
            moved = await conn.execute(
                connections.update()
                .where(connections.c.id == connection.id, connections.c.status != "revoked")
                .values(status="revoked", tokens=None, updated_at=now,
                        version=connections.c.version + 1)
            )  # fmt: skip
            if moved.rowcount != 1:
                return False
            await append_in(conn, self._db.is_sqlite, events)
        return True
