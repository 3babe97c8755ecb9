"""Token-path reads and writes. Implements `OAuthStore` and `KeyStore`.

`load_client_context` is the hot path: one query returns the client, its tenant and the
active signing key id, so a suspension or a key rotation is seen by the very next request
on every node without a cache to invalidate.
"""

from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from valetkey.audit.events import AuditEvent
from valetkey.errors import Conflict
from valetkey.identity.models import Resource
from valetkey.oauth.context import ClientContext
from valetkey.oauth.keys import StoredKey
from valetkey.storage import rows
from valetkey.storage.audit_store import append_in
from valetkey.storage.database import Database
from valetkey.storage.hot_path import RowReader, context_from_row, context_sql, select_where
from valetkey.storage.tables import (
    resources,
    revoked_tokens,
    signing_keys,
    used_assertions,
)

_KEYS_LOCK = 0x766B6B73  # serialises key changes across PostgreSQL nodes

_CONTEXT_SQL = sa.text(context_sql(":client_id"))


class ClientContextLoader(RowReader, Protocol):
    async def load_client_context(self, client_id: str) -> ClientContext | None: ...


class SqlOAuthStore:
    def __init__(self, db: Database, hot: ClientContextLoader | None = None) -> None:
        self._db = db
        self._hot = hot

    def with_hot_path(self, hot: ClientContextLoader) -> "SqlOAuthStore":
        """The same store, loading client contexts through the raw-driver hot path."""
        return SqlOAuthStore(self._db, hot)

    async def load_client_context(self, client_id: str) -> ClientContext | None:
        if self._hot is not None:
            return await self._hot.load_client_context(client_id)
        async with self._db.read() as conn:
            row = (await conn.execute(_CONTEXT_SQL, {"client_id": client_id})).first()
        return context_from_row(tuple(row)) if row is not None else None

    async def resources_for_tenant(self, tenant_id: str) -> list[Resource]:
        async with self._db.read() as conn:
            result = await conn.execute(
                sa.select(resources).where(resources.c.tenant_id == tenant_id)
            )
            return [rows.resource(r) for r in result]

    async def is_revoked(self, jti: str) -> bool:
        return bool(await select_where(self._db, self._hot, revoked_tokens, jti=jti))

    async def revoke_token(self, jti: str, tenant_id: str, expires_at: float, now: float) -> bool:
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    revoked_tokens.delete().where(revoked_tokens.c.expires_at < now - 60)
                )
                await conn.execute(
                    revoked_tokens.insert().values(
                        jti=jti, tenant_id=tenant_id, expires_at=expires_at, revoked_at=now
                    )
                )
        except IntegrityError:
            return False
        return True

    async def consume_assertion(self, key: str, expires_at: float) -> bool:
        try:
            async with self._db.write() as conn:
                await conn.execute(used_assertions.insert().values(key=key, expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    async def purge_expired(self, now: float) -> None:
        async with self._db.write() as conn:
            await conn.execute(used_assertions.delete().where(used_assertions.c.expires_at < now))
            await conn.execute(revoked_tokens.delete().where(revoked_tokens.c.expires_at < now))

    # signing keys --------------------------------------------------------------------------
    async def list_keys(self) -> list[StoredKey]:
        async with self._db.read() as conn:
            result = await conn.execute(sa.select(signing_keys).order_by(signing_keys.c.created_at))
            return [
                StoredKey(
                    kid=r.kid,
                    alg=r.alg,
                    status=r.status,
                    private_key=r.private_key,
                    public_jwk=r.public_jwk,
                    created_at=r.created_at,
                    activated_at=r.activated_at,
                    retired_at=r.retired_at,
                    publish_until=r.publish_until,
                )
                for r in result
            ]

    async def insert_keys(self, keys: Sequence[StoredKey]) -> None:
        try:
            async with self._db.write() as conn:
                await self._lock_keys(conn)
                if any(k.status == "active" for k in keys):
                    taken = await conn.scalar(
                        sa.select(sa.func.count()).where(signing_keys.c.status == "active")
                    )
                    if taken:
                        raise Conflict("an active signing key already exists")
                for key in keys:
                    await conn.execute(signing_keys.insert().values(**_key_values(key)))
        except IntegrityError as exc:
            raise Conflict("signing key already exists") from exc

    async def rotate(
        self,
        expected_active: str | None,
        updates: Sequence[StoredKey],
        inserts: Sequence[StoredKey],
        purge_before: float,
        events: Sequence[AuditEvent] = (),
    ) -> None:
        async with self._db.write() as conn:
            await self._lock_keys(conn)
            current = await conn.scalar(
                sa.select(signing_keys.c.kid).where(signing_keys.c.status == "active")
            )
            if current != expected_active:
                raise Conflict("another rotation happened at the same time; try again")
            for key in updates:
                await conn.execute(
                    signing_keys.update()
                    .where(signing_keys.c.kid == key.kid)
                    .values(**_key_values(key))
                )
            for key in inserts:
                await conn.execute(signing_keys.insert().values(**_key_values(key)))
            await conn.execute(
                signing_keys.delete().where(
                    signing_keys.c.status == "retired",
                    signing_keys.c.publish_until < purge_before,
                )
            )
            await append_in(conn, self._db.is_sqlite, events)

    async def _lock_keys(self, conn: AsyncConnection) -> None:
        if not self._db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already holds the write lock
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _KEYS_LOCK})


def _key_values(key: StoredKey) -> dict[str, object]:
    return {
        "kid": key.kid,
        "alg": key.alg,
        "status": key.status,
        "private_key": key.private_key,
        "public_jwk": key.public_jwk,
        "created_at": key.created_at,
        "activated_at": key.activated_at,
        "retired_at": key.retired_at,
        "publish_until": key.publish_until,
    }
