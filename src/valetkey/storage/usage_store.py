"""Limits and exact usage counters in SQL (implements `policy.limits.UsageStore`).

A charge is `INSERT … ON CONFLICT DO UPDATE SET count = count + n WHERE count + n <= max
RETURNING count`: PostgreSQL locks the row and re-checks the condition against the latest
committed count, SQLite holds its one write lock, so the increment is exact either way.
All of a decision's charges run in one transaction and roll back together.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from valetkey.audit.events import AuditEvent
from valetkey.errors import Conflict
from valetkey.policy.limits import Charge, Limit
from valetkey.storage.audit_store import append_in
from valetkey.storage.hot_path import HotReadStore
from valetkey.storage.identity_store import bump_tenant_version
from valetkey.storage.tables import limits, usage_counters


class _Exceeded(Exception):
    def __init__(self, charge: Charge) -> None:
        self.charge = charge


def _limit(row: Any) -> Limit:
    return Limit(row.id, row.tenant_id, row.agent_id, row.user_id, row.action_class, row.kind,
                 int(row.maximum), row.per)  # fmt: skip


def upsert(is_sqlite: bool, tenant_id: str, charge: Charge, conditional: bool) -> Any:
    """The counter increment for one charge, in the dialect's upsert."""
    insert = sqlite_insert if is_sqlite else pg_insert
    statement = insert(usage_counters).values(
        tenant_id=tenant_id, key=charge.key, window_start=charge.window_start,
        count=charge.amount, expires_at=charge.expires_at,
    )  # fmt: skip
    total = usage_counters.c.count + statement.excluded.count
    update = statement.on_conflict_do_update(
        index_elements=["tenant_id", "key", "window_start"],
        set_={"count": total},
        where=(total <= charge.maximum) if conditional and charge.maximum is not None else None,
    )
    return update.returning(usage_counters.c.count)


class SqlUsageStore(HotReadStore):
    async def read_counters(
        self, tenant_id: str, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        if not keys:
            return {}
        if self._hot is not None:
            pairs = " OR ".join("(key = ? AND window_start = ?)" for _ in keys)
            sql = (
                "SELECT key, window_start, count FROM usage_counters "  # noqa: S608 (constant)
                f"WHERE tenant_id = ? AND ({pairs})"
            )
            params: list[Any] = [tenant_id]
            for key, start in keys:
                params += [key, start]
            rows = await self._hot.fetch(sql, *params)
            return {(r[0], int(r[1])): int(r[2]) for r in rows}
        condition = sa.or_(
            *(
                sa.and_(usage_counters.c.key == k, usage_counters.c.window_start == s)
                for k, s in keys
            )
        )
        columns = (usage_counters.c.key, usage_counters.c.window_start, usage_counters.c.count)
        query = sa.select(*columns).where(usage_counters.c.tenant_id == tenant_id, condition)
        async with self._db.read() as conn:
            found = await conn.execute(query)
            return {(r[0], int(r[1])): int(r[2]) for r in found}

    async def charge(self, tenant_id: str, charges: Sequence[Charge]) -> Charge | None:
        for charge in charges:
            if charge.maximum is not None and charge.amount > charge.maximum:
                return charge
        if not charges:
            return None
        try:
            async with self._db.write() as conn:
                for charge in charges:
                    moved = await conn.execute(upsert(self._db.is_sqlite, tenant_id, charge, True))
                    if moved.first() is None:
                        raise _Exceeded(charge)  # rolls back every charge of this decision
        except _Exceeded as exc:
            return exc.charge
        return None

    async def list_limits(self, tenant_id: str) -> list[Limit]:
        return [_limit(r) for r in await self._select(limits, tenant_id=tenant_id)]

    async def set_limit(self, limit: Limit, now: float, events: Sequence[AuditEvent]) -> Limit:
        """Create or replace the limit for this subject, class, kind and window."""
        same = [
            limits.c[name].is_(None) if value is None else limits.c[name] == value
            for name, value in (
                ("agent_id", limit.agent_id),
                ("user_id", limit.user_id),
                ("action_class", limit.action_class),
            )
        ]
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    limits.delete().where(
                        limits.c.tenant_id == limit.tenant_id, limits.c.kind == limit.kind,
                        limits.c.per == limit.per, *same,
                    )
                )  # fmt: skip
                await conn.execute(
                    limits.insert().values(
                        id=limit.id, tenant_id=limit.tenant_id, agent_id=limit.agent_id,
                        user_id=limit.user_id, action_class=limit.action_class, kind=limit.kind,
                        maximum=limit.maximum, per=limit.per, created_at=now,
                    )
                )  # fmt: skip
                await bump_tenant_version(conn, limit.tenant_id)
                await append_in(conn, self._db.is_sqlite, events)
        except IntegrityError as exc:
            raise Conflict("another change to this limit happened at the same time") from exc
        return limit

    async def purge(self, now: float) -> None:
        async with self._db.write() as conn:
            await conn.execute(usage_counters.delete().where(usage_counters.c.expires_at < now))
