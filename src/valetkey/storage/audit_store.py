"""The audit log in SQL: chained appends under a per-tenant head row, searches, and reads
for verification. Implements `AuditAppender`.

Appends from every node serialise on the tenant's head row (`SELECT … FOR UPDATE` on
PostgreSQL; SQLite's `BEGIN IMMEDIATE` holds the database write lock), so the chain stays
one line however many processes write to it.
"""

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from valetkey.audit.chain import GENESIS, ChainHead, link_hash
from valetkey.audit.events import AuditEvent, AuditQuery, StoredEvent
from valetkey.ids import new_id
from valetkey.storage.database import Database
from valetkey.storage.tables import audit_events, audit_heads

_PAGE = 2000


# What a decision adds to the counters policies read, in its audit event's transaction.
COUNTER_UPSERT = (
    "INSERT INTO usage_counters (tenant_id, key, window_start, count, expires_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, key, window_start) "
    "DO UPDATE SET count = usage_counters.count + excluded.count"
)


def counter_rows(events: Sequence[AuditEvent]) -> list[tuple[Any, ...]]:
    return [
        (e.tenant_id, key, start, amount, expires)
        for e in events
        for key, start, expires, amount in e.counters
    ]


async def append_in(conn: AsyncConnection, is_sqlite: bool, events: Sequence[AuditEvent]) -> None:
    """Chain and insert events inside the caller's transaction: a change and its audit
    events commit together or not at all."""
    if not events:
        return
    tenants = sorted({e.tenant_id for e in events})  # fixed lock order: no deadlocks
    insert_head = (sqlite if is_sqlite else postgresql).insert(audit_heads)
    await conn.execute(
        insert_head.on_conflict_do_nothing(index_elements=["tenant_id"]),
        [{"tenant_id": t, "seq": 0, "hash": GENESIS} for t in tenants],
    )
    query = sa.select(audit_heads).where(audit_heads.c.tenant_id.in_(tenants))
    if not is_sqlite:
        query = query.order_by(audit_heads.c.tenant_id).with_for_update()
    heads = {r.tenant_id: (r.seq, r.hash) for r in await conn.execute(query)}
    values: list[dict[str, Any]] = []
    for event in events:
        seq, prev = heads[event.tenant_id]
        stored = chain_event(event, seq + 1, prev)
        heads[event.tenant_id] = (stored.seq, stored.hash)
        values.append(_values(stored))
    await conn.execute(audit_events.insert(), values)
    for tenant_id in tenants:
        seq, digest = heads[tenant_id]
        await conn.execute(
            audit_heads.update()
            .where(audit_heads.c.tenant_id == tenant_id)
            .values(seq=seq, hash=digest)
        )
    moves = counter_rows(events)
    if moves:
        names = ("t", "k", "w", "n", "e")
        await conn.execute(
            sa.text(COUNTER_UPSERT.replace("?, ?, ?, ?, ?", ":t, :k, :w, :n, :e")),
            [dict(zip(names, m, strict=True)) for m in moves],
        )


class SqlAuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, events: Sequence[AuditEvent]) -> None:
        if events:
            async with self._db.write() as conn:
                await append_in(conn, self._db.is_sqlite, events)

    async def search(self, query: AuditQuery) -> list[StoredEvent]:
        stmt = sa.select(audit_events)
        for column, value in (
            (audit_events.c.tenant_id, query.tenant_id),
            (audit_events.c.agent_id, query.agent_id),
            (audit_events.c.user_id, query.user_id),
            (audit_events.c.correlation_id, query.correlation_id),
            (audit_events.c.type, query.type),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        stmt = stmt.order_by(audit_events.c.ts_us.desc(), audit_events.c.seq.desc())
        stmt = stmt.limit(query.limit)
        async with self._db.read() as conn:
            return [_stored(r) for r in await conn.execute(stmt)]

    async def chained_tenants(self) -> list[str]:
        """Every tenant with a chain: from the events as well as the heads, so deleting a
        head row cannot hide a chain from verification."""
        union = sa.union(
            sa.select(audit_heads.c.tenant_id), sa.select(audit_events.c.tenant_id).distinct()
        ).subquery()
        async with self._db.read() as conn:
            result = await conn.execute(sa.select(union.c.tenant_id).order_by(union.c.tenant_id))
            return [r.tenant_id for r in result]

    async def head(self, tenant_id: str) -> ChainHead | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(audit_heads).where(audit_heads.c.tenant_id == tenant_id)
                )
            ).first()
        return ChainHead(row.tenant_id, row.seq, row.hash) if row else None

    async def iterate(self, tenant_id: str, upto: int | None = None) -> AsyncIterator[StoredEvent]:
        """Every event of one tenant in chain order (up to seq `upto`), read in pages."""
        after = 0
        while True:
            query = sa.select(audit_events).where(
                audit_events.c.tenant_id == tenant_id, audit_events.c.seq > after
            )
            if upto is not None:
                query = query.where(audit_events.c.seq <= upto)
            async with self._db.read() as conn:
                result = await conn.execute(query.order_by(audit_events.c.seq).limit(_PAGE))
                page = [_stored(r) for r in result]
            for event in page:
                yield event
            if len(page) < _PAGE:
                return
            after = page[-1].seq

    async def count(self, tenant_id: str) -> int:
        async with self._db.read() as conn:
            value = await conn.scalar(
                sa.select(sa.func.count()).where(audit_events.c.tenant_id == tenant_id)
            )
        return int(value or 0)


def chain_event(event: AuditEvent, seq: int, prev_hash: str) -> StoredEvent:
    """Give an event its place after `prev_hash` in its tenant's chain."""
    unhashed = StoredEvent(
        id=new_id("evt"),
        tenant_id=event.tenant_id,
        seq=seq,
        type=event.type,
        ts_us=int(event.ts * 1_000_000),
        correlation_id=event.correlation_id,
        outcome=event.outcome,
        reason=event.reason,
        agent_id=event.agent_id,
        user_id=event.user_id,
        jti=event.jti,
        data=event.data,
        prev_hash=prev_hash,
        hash="",
    )
    return replace(unhashed, hash=link_hash(prev_hash, unhashed.chained_fields()))


def _values(event: StoredEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "tenant_id": event.tenant_id,
        "seq": event.seq,
        "type": event.type,
        "ts_us": event.ts_us,
        "correlation_id": event.correlation_id,
        "outcome": event.outcome,
        "reason": event.reason,
        "agent_id": event.agent_id,
        "user_id": event.user_id,
        "jti": event.jti,
        "data": event.data,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "decision": event.decision,
    }


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        id=row.id,
        tenant_id=row.tenant_id,
        seq=row.seq,
        type=row.type,
        ts_us=row.ts_us,
        correlation_id=row.correlation_id,
        outcome=row.outcome,
        reason=row.reason,
        agent_id=row.agent_id,
        user_id=row.user_id,
        jti=row.jti,
        data=row.data,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
