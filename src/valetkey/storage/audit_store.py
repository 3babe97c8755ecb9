"""The audit log in SQL: chained appends under a per-tenant head row, searches, and reads
for verification. Implements `AuditAppender`.

Appends from every node serialise on the tenant's head row (`SELECT … FOR UPDATE` on
PostgreSQL; SQLite's `BEGIN IMMEDIATE` holds the database write lock), so the chain stays
one line however many processes write to it.
"""

from collections.abc import AsyncGenerator, Callable, Sequence
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
# How long after its time was taken an event may be chained, at most (see `_seq_bounds`).
ORDER_SLACK = 300.0


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
        """Events matching every filter given, newest first: by chain position (`seq`)
        within a tenant, by time across tenants.

        Within a tenant every equality filter has an index led by `(tenant_id, column)` and
        ending in `seq`, so a page is read in chain order straight off one index, however
        long the log. A time range is turned into a range of `seq` first (two index seeks
        on `(tenant_id, ts_us)`, see `_seq_bounds`) and then checked row by row: ordering a
        range of timestamps by `seq` would sort every event of the range for each page."""
        stmt = sa.select(audit_events)
        for column, value in (
            (audit_events.c.tenant_id, query.tenant_id),
            (audit_events.c.agent_id, query.agent_id),
            (audit_events.c.user_id, query.user_id),
            (audit_events.c.correlation_id, query.correlation_id),
            (audit_events.c.type, query.type),
            (audit_events.c.decision, query.decision),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        after, before = query.after_seq, query.before_seq
        ts: sa.ColumnElement[Any] = audit_events.c.ts_us
        if query.tenant_id is not None and (query.since is not None or query.until is not None):
            low, high = await self._seq_bounds(query.tenant_id, query.since, query.until)
            after = _tighter(max, after, low)
            before = _tighter(min, before, high)
            ts = audit_events.c.ts_us + 0  # checked on the rows; not an index to sort from
        if query.since is not None:
            stmt = stmt.where(ts >= _us(query.since))
        if query.until is not None:
            stmt = stmt.where(ts < _us(query.until))
        if before is not None:
            stmt = stmt.where(audit_events.c.seq < before)
        if after is not None:
            stmt = stmt.where(audit_events.c.seq > after)
        rising = query.after_seq is not None and query.before_seq is None
        if query.tenant_id is None:
            stmt = stmt.order_by(audit_events.c.ts_us.desc(), audit_events.c.seq.desc())
        elif rising:  # the page just newer than a cursor: read upwards, return newest first
            stmt = stmt.order_by(audit_events.c.seq)
        else:
            stmt = stmt.order_by(audit_events.c.seq.desc())
        stmt = stmt.limit(query.limit)
        async with self._db.read() as conn:
            found = [_stored(r) for r in await conn.execute(stmt)]
        return found[::-1] if rising and query.tenant_id is not None else found

    async def _seq_bounds(
        self, tenant_id: str, since: float | None, until: float | None
    ) -> tuple[int | None, int | None]:
        """Exclusive `seq` bounds around every event of a tenant stamped in [since, until).

        An event's time is taken before it is chained, and it is chained at most
        `ORDER_SLACK` later (a transaction, a batch of the writer, two nodes' clocks apart).
        So an event stamped more than that before `since` is chained before every event of
        the range, and one stamped more than that after `until` after them all: the last of
        the first kind and the first of the second are one index seek each."""
        low = high = None
        ts, seq = audit_events.c.ts_us, audit_events.c.seq
        mine = audit_events.c.tenant_id == tenant_id
        async with self._db.read() as conn:
            if since is not None:
                low = await conn.scalar(
                    sa.select(seq)
                    .where(mine, ts < _us(since - ORDER_SLACK))
                    .order_by(ts.desc())
                    .limit(1)
                )
            if until is not None:
                high = await conn.scalar(
                    sa.select(seq).where(mine, ts >= _us(until + ORDER_SLACK)).order_by(ts).limit(1)
                )
        return low, high

    async def task(
        self, tenant_id: str, correlation_id: str, limit: int = 1000
    ) -> list[StoredEvent]:
        """One task's events in a tenant (those sharing a correlation id), oldest first."""
        stmt = (
            sa.select(audit_events)
            .where(
                audit_events.c.tenant_id == tenant_id,
                audit_events.c.correlation_id == correlation_id,
            )
            .order_by(audit_events.c.seq)
            .limit(limit)
        )
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

    async def iterate(
        self, tenant_id: str, upto: int | None = None
    ) -> AsyncGenerator[StoredEvent, None]:
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

    async def decisions_per_hour(
        self, tenant_id: str, agent_id: str, since_us: int
    ) -> list[tuple[int, str, int]]:
        """One agent's `decision.made` events since `since_us`, counted per UTC hour and
        verdict: `(hour's start in seconds, decision, count)`, oldest first.

        The agent's index (tenant, agent, seq) is read only from where the window's events
        can start in the chain (`_seq_bounds`), so an agent's older history is never
        scanned."""
        e = audit_events
        low, _ = await self._seq_bounds(tenant_id, since_us / 1e6, None)
        # a literal (not a bound parameter), so GROUP BY repeats exactly the selected expression
        hour = (e.c.ts_us // sa.literal_column("3600000000", sa.BigInteger)).label("hour")
        stmt = (
            sa.select(hour, e.c.decision, sa.func.count().label("n"))
            .where(
                e.c.tenant_id == tenant_id,
                e.c.agent_id == agent_id,
                e.c.seq > (low if low is not None else 0),
                e.c.type == "decision.made",
                e.c.ts_us >= since_us,
                e.c.decision.is_not(None),
            )
            .group_by(hour, e.c.decision)
            .order_by(hour)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(int(r.hour) * 3600, str(r.decision), int(r.n)) for r in rows]

    async def last_event_times(
        self, tenant_id: str, agent_ids: Sequence[str], types: Sequence[str]
    ) -> dict[str, float]:
        """When each agent's newest event of one of `types` happened (seconds); agents
        without one are left out. One index seek per agent, newest first."""
        found: dict[str, float] = {}
        if not agent_ids or not types:
            return found
        e = audit_events
        async with self._db.read() as conn:
            for agent_id in dict.fromkeys(agent_ids):
                ts_us = await conn.scalar(
                    sa.select(e.c.ts_us)
                    .where(e.c.tenant_id == tenant_id, e.c.agent_id == agent_id,
                           e.c.type.in_(list(types)))
                    .order_by(e.c.seq.desc())
                    .limit(1)
                )  # fmt: skip
                if ts_us is not None:
                    found[agent_id] = ts_us / 1_000_000
        return found


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


def _tighter(pick: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else pick(a, b)


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


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
