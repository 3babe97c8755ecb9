"""Connections in SQL. Tokens are one envelope ciphertext per connection (a JSON object),
bound to the row; revoking destroys the ciphertext."""

import json
from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Self

import sqlalchemy as sa

from valetkey.audit.events import AuditEvent
from valetkey.errors import NotFound
from valetkey.notify.outbox import Delivery
from valetkey.storage.audit_store import append_in
from valetkey.storage.database import Database
from valetkey.storage.hot_path import RowReader
from valetkey.storage.notify_store import insert_deliveries
from valetkey.storage.tables import connect_states, connections, providers
from valetkey.vault.cipher import Envelope
from valetkey.vault.connections import Connection, PlatformTokens
from valetkey.vault.refresh import Refreshed, Slot

_COLUMNS = (
    "id",
    "tenant_id",
    "provider_id",
    "owner_kind",
    "owner_id",
    "tokens",
    "status",
    "scopes",
    "expires_at",
    "version",
    "created_at",
    "updated_at",
    "lease_until",
    "refresh_after",
)
# The gateway's two reads, on the raw driver when a hot path is open (see hot_path.py).
_BY_ID = (
    f"SELECT {', '.join('c.' + c for c in _COLUMNS)}, p.name FROM connections c "  # noqa: S608
    "JOIN providers p ON p.id = c.provider_id WHERE c.id = ?"
)
_BY_OWNER = (
    f"SELECT {', '.join('c.' + c for c in _COLUMNS)}, p.name FROM connections c "  # noqa: S608
    "JOIN providers p ON p.id = c.provider_id WHERE c.tenant_id = ? AND c.provider_id = ? "
    "AND c.owner_kind = ? AND c.owner_id = ? AND c.status <> 'revoked' "
    "ORDER BY c.created_at DESC LIMIT 1"
)


def token_context(connection_id: str) -> str:
    return f"connections/{connection_id}/tokens"


class SqlConnectionStore:
    def __init__(self, db: Database, envelope: Envelope, hot: RowReader | None = None) -> None:
        self._db = db
        self._envelope = envelope
        self._hot = hot

    def with_hot_path(self, hot: RowReader) -> Self:
        return type(self)(self._db, self._envelope, hot)

    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        """Rows of one of the two reads above, as attribute records, on either driver."""
        if self._hot is not None:
            raw = await self._hot.fetch(sql, *params)
        else:
            async with self._db.read() as conn:
                named = sql
                for i in range(len(params)):
                    named = named.replace("?", f":p{i}", 1)
                raw = list(
                    await conn.execute(sa.text(named), {f"p{i}": v for i, v in enumerate(params)})
                )
        found = []
        for row in raw:
            values = dict(zip((*_COLUMNS, "provider_name"), row, strict=True))
            if isinstance(values["scopes"], str):
                values["scopes"] = json.loads(values["scopes"])
            found.append(SimpleNamespace(**values))
        return found

    def _open(self, connection_id: str, sealed: str | None) -> PlatformTokens | None:
        if sealed is None:
            return None
        plain = self._envelope.decrypt(str(sealed), token_context(connection_id))
        return PlatformTokens.from_json(json.loads(plain))

    def _slot(self, row: Any) -> Slot:
        return Slot(self._connection(row), self._open(row.id, row.tokens), row.refresh_after,
                    row.lease_until)  # fmt: skip

    async def slot(self, connection_id: str) -> Slot:
        rows = await self._rows(_BY_ID, connection_id)
        if not rows:
            raise NotFound(f"no connection {connection_id!r}")
        return self._slot(rows[0])

    async def find_for(
        self, tenant_id: str, provider_id: str, owner_kind: str, owner_id: str
    ) -> Slot | None:
        """The owner's live (active or needs_reauth) connection to the provider, with its
        tokens: the gateway's one read of the vault on a call with a fresh token."""
        rows = await self._rows(_BY_OWNER, tenant_id, provider_id, owner_kind, owner_id)
        return self._slot(rows[0]) if rows else None

    async def due(self, now: float, limit: int) -> list[tuple[str, str, str]]:
        c = connections.c
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(c.id, c.tenant_id, c.provider_id)
                .where(c.status == "active", c.refresh_after.is_not(None), c.refresh_after < now)
                .order_by(c.refresh_after)
                .limit(limit)
            )
            return [(r.id, r.tenant_id, r.provider_id) for r in rows]

    async def take_lease(
        self, connection_id: str, version: int, holder: str, now: float, until: float
    ) -> bool:
        """The refresh lease, by compare-and-set: the row still at `version`, still
        active, and nobody else's lease running."""
        c = connections.c
        async with self._db.write() as conn:
            moved = await conn.execute(
                connections.update()
                .where(
                    c.id == connection_id,
                    c.version == version,
                    c.status == "active",
                    sa.or_(c.lease_until.is_(None), c.lease_until <= now),
                )
                .values(lease_until=until, lease_holder=holder)
            )
        return bool(moved.rowcount == 1)

    async def save_refreshed(
        self,
        connection_id: str,
        version: int,
        holder: str,
        refreshed: Refreshed,
        now: float,
        events: Sequence[AuditEvent],
    ) -> bool:
        """The new tokens (with a rotated refresh token), only over the version that was
        read and under our own lease; the audit event in the same transaction."""
        c = connections.c
        values: dict[str, Any] = {
            "tokens": self._seal(connection_id, refreshed.tokens),
            "version": version + 1,
            "expires_at": refreshed.expires_at,
            "refresh_after": refreshed.refresh_after,
            "refreshed_at": now,
            "updated_at": now,
            "lease_until": None,
            "lease_holder": None,
        }
        if refreshed.scopes:
            values["scopes"] = list(refreshed.scopes)
        async with self._db.write() as conn:
            moved = await conn.execute(
                connections.update()
                .where(
                    c.id == connection_id,
                    c.version == version,
                    c.lease_holder == holder,
                    c.status == "active",
                )
                .values(**values)
            )
            if moved.rowcount != 1:
                return False
            await append_in(conn, self._db.is_sqlite, events)
        return True

    async def release(self, connection_id: str, holder: str, events: Sequence[AuditEvent]) -> None:
        c = connections.c
        async with self._db.write() as conn:
            await conn.execute(
                connections.update()
                .where(c.id == connection_id, c.lease_holder == holder)
                .values(lease_until=None, lease_holder=None)
            )
            await append_in(conn, self._db.is_sqlite, events)

    async def mark_needs_reauth(
        self,
        connection_id: str,
        holder: str,
        now: float,
        events: Sequence[AuditEvent],
        deliveries: Sequence[Delivery],
    ) -> bool:
        c = connections.c
        async with self._db.write() as conn:
            moved = await conn.execute(
                connections.update()
                .where(c.id == connection_id, c.lease_holder == holder)
                .values(
                    status="needs_reauth",
                    lease_until=None,
                    lease_holder=None,
                    updated_at=now,
                    version=c.version + 1,
                )
            )
            if moved.rowcount != 1:
                return False
            await append_in(conn, self._db.is_sqlite, events)
            await insert_deliveries(conn, deliveries)
        return True

    async def connect(
        self,
        connection: Connection,
        tokens: PlatformTokens,
        refresh_after: float | None,
        events: Sequence[AuditEvent],
    ) -> Connection:
        """Store the tokens of a completed connect flow: over the owner's live connection
        to the provider when there is one (a reconnect), else as a new one."""
        c = connections.c
        async with self._db.write() as conn:
            existing = (
                await conn.execute(
                    sa.select(c.id, c.created_at)
                    .where(
                        c.tenant_id == connection.tenant_id,
                        c.provider_id == connection.provider_id,
                        c.owner_kind == connection.owner_kind,
                        c.owner_id == connection.owner_id,
                        c.status != "revoked",
                    )
                    .order_by(c.created_at.desc())
                    .limit(1)
                )
            ).first()
            if existing is None:
                await conn.execute(
                    self._insert(connection, tokens, refresh_after=refresh_after,
                                 refreshed_at=connection.updated_at)
                )  # fmt: skip
                stored = connection
            else:
                await conn.execute(
                    connections.update()
                    .where(c.id == existing.id)
                    .values(
                        tokens=self._seal(existing.id, tokens),
                        status="active",
                        scopes=list(connection.scopes),
                        expires_at=connection.expires_at,
                        refresh_after=refresh_after,
                        refreshed_at=connection.updated_at,
                        updated_at=connection.updated_at,
                        version=c.version + 1,
                        lease_until=None,
                        lease_holder=None,
                    )
                )
                stored = replace(connection, id=existing.id, created_at=existing.created_at)
            await append_in(
                conn,
                self._db.is_sqlite,
                [replace(e, data={**e.data, "connection_id": stored.id}) for e in events],
            )
        return stored

    # connect-flow states ---------------------------------------------------------------
    async def add_state(
        self,
        state_id: str,
        connection: Connection,
        started_by: str,
        verifier: str,
        expires_at: float,
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                connect_states.insert().values(
                    id=state_id,
                    tenant_id=connection.tenant_id,
                    provider_id=connection.provider_id,
                    owner_kind=connection.owner_kind,
                    owner_id=connection.owner_id,
                    started_by=started_by,
                    verifier=self._envelope.encrypt(
                        verifier.encode(), f"connect_states/{state_id}"
                    ),
                    scopes=list(connection.scopes),
                    created_at=connection.created_at,
                    expires_at=expires_at,
                )
            )
            await conn.execute(
                connect_states.delete().where(connect_states.c.expires_at < connection.created_at)
            )

    async def take_state(self, state_id: str, now: float) -> tuple[Any, str] | None:
        """The pending flow for `state`, spent: a state is good for one callback."""
        async with self._db.write() as conn:
            row = (
                await conn.execute(sa.select(connect_states).where(connect_states.c.id == state_id))
            ).first()
            if row is None:
                return None
            await conn.execute(connect_states.delete().where(connect_states.c.id == state_id))
        if row.expires_at < now:
            return None
        verifier = self._envelope.decrypt(row.verifier, f"connect_states/{state_id}").decode()
        return row, verifier

    def _seal(self, connection_id: str, tokens: PlatformTokens) -> str:
        return self._envelope.encrypt(
            json.dumps(tokens.to_json()).encode(), token_context(connection_id)
        )

    async def create(
        self, connection: Connection, tokens: PlatformTokens, events: Sequence[AuditEvent]
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(self._insert(connection, tokens))
            await append_in(conn, self._db.is_sqlite, events)

    def _insert(self, connection: Connection, tokens: PlatformTokens, **extra: Any) -> Any:
        return connections.insert().values(
            id=connection.id, tenant_id=connection.tenant_id,
            provider_id=connection.provider_id, owner_kind=connection.owner_kind,
            owner_id=connection.owner_id, tokens=self._seal(connection.id, tokens),
            status=connection.status, scopes=list(connection.scopes),
            expires_at=connection.expires_at, version=connection.version,
            created_at=connection.created_at, updated_at=connection.updated_at, **extra,
        )  # fmt: skip

    def _query(self) -> Any:
        return sa.select(connections, providers.c.name.label("provider_name")).join(
            providers, providers.c.id == connections.c.provider_id
        )

    @staticmethod
    def _connection(row: Any) -> Connection:
        return Connection(
            row.id,
            row.tenant_id,
            row.provider_id,
            row.provider_name,
            row.owner_kind,
            row.owner_id,
            row.status,
            tuple(row.scopes),
            row.expires_at,
            row.version,
            row.created_at,
            row.updated_at,
        )

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
            rows = await conn.execute(
                self._query()
                .where(connections.c.tenant_id == tenant_id)
                .order_by(connections.c.created_at)
            )
            return [self._connection(r) for r in rows]

    async def owned_by(self, tenant_id: str, owner_kind: str, owner_id: str) -> list[Connection]:
        return [
            c
            for c in await self.list_all(tenant_id)
            if c.owner_kind == owner_kind and c.owner_id == owner_id
        ]

    async def tokens(self, connection: Connection) -> PlatformTokens:
        async with self._db.read() as conn:
            sealed = await conn.scalar(
                sa.select(connections.c.tokens).where(connections.c.id == connection.id)
            )
        tokens = self._open(connection.id, sealed)
        if tokens is None:
            raise NotFound("the connection holds no tokens (revoked)")
        return tokens

    async def revoke(
        self, connection: Connection, now: float, events: Sequence[AuditEvent]
    ) -> bool:
        """Destroy the ciphertext; False, and nothing written, when it already was."""
        async with self._db.write() as conn:
            moved = await conn.execute(
                connections.update()
                .where(connections.c.id == connection.id, connections.c.status != "revoked")
                .values(
                    status="revoked", tokens=None, updated_at=now, version=connections.c.version + 1
                )
            )
            if moved.rowcount != 1:
                return False
            await append_in(conn, self._db.is_sqlite, events)
        return True
