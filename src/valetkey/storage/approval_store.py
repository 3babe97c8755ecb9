"""Approvals in SQL (implements `policy.approvals.ApprovalStore`): every status change is a
conditional UPDATE committed with its audit event, so it happens once on any node."""

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from valetkey.audit.events import AuditEvent
from valetkey.notify.outbox import Delivery
from valetkey.policy.approvals import Approval, Status
from valetkey.storage.audit_store import append_in
from valetkey.storage.hot_path import HotReadStore
from valetkey.storage.notify_store import insert_deliveries
from valetkey.storage.tables import approvals

_FIELDS = tuple(f.name for f in dataclasses.fields(Approval))


def _approval(row: Any) -> Approval:
    return Approval(**{name: getattr(row, name) for name in _FIELDS})


class SqlApprovalStore(HotReadStore):
    async def create_approval(
        self,
        approval: Approval,
        events: Sequence[AuditEvent],
        deliveries: Sequence[Delivery] = (),
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(approvals.insert().values(**dataclasses.asdict(approval)))
            await insert_deliveries(conn, deliveries)
            await append_in(conn, self._db.is_sqlite, events)

    async def get_approval(self, approval_id: str) -> Approval | None:
        found = await self._select(approvals, id=approval_id)
        return _approval(found[0]) if found else None

    async def find_pending(
        self, tenant_id: str, agent_id: str, delegation_key: str | None, digest: str, now: float
    ) -> Approval | None:
        found = await self._select(approvals, tenant_id=tenant_id, status="pending",
            intent_hash=digest, agent_id=agent_id,
        )  # fmt: skip
        waiting = [
            _approval(r) for r in found
            if r.delegation_key == delegation_key and r.expires_at > now
        ]  # fmt: skip
        return min(waiting, key=lambda a: a.created_at) if waiting else None

    async def overdue(self, now: float, limit: int = 500) -> list[Approval]:
        """Pending or approved approvals past their expiry (for the sweep)."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(approvals)
                .where(approvals.c.status.in_(("pending", "approved")),
                       approvals.c.expires_at <= now)
                .limit(limit)
            )  # fmt: skip
            return [_approval(r) for r in rows]

    async def list_approvals(self, tenant_id: str, status: str | None) -> list[Approval]:
        query = sa.select(approvals).where(approvals.c.tenant_id == tenant_id)
        if status is not None:
            query = query.where(approvals.c.status == status)
        async with self._db.read() as conn:
            rows = await conn.execute(query.order_by(approvals.c.created_at.desc()).limit(500))
            return [_approval(r) for r in rows]

    async def transition(
        self,
        approval_id: str,
        from_status: Status,
        to: Status,
        now: float,
        fields: dict[str, Any],
        events: Sequence[AuditEvent],
    ) -> bool:
        async with self._db.write() as conn:
            moved = await conn.execute(
                approvals.update()
                .where(approvals.c.id == approval_id, approvals.c.status == from_status)
                .values(status=to, **fields)
            )
            if moved.rowcount != 1:
                return False
            await append_in(conn, self._db.is_sqlite, events)
        return True
