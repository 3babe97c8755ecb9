"""Webhooks and the notification outbox in SQL (implements `notify.outbox.OutboxStore`).
Webhook secrets are stored envelope-encrypted, bound to their row."""

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from valetkey.audit.events import AuditEvent
from valetkey.notify.outbox import Delivery, Webhook
from valetkey.storage.audit_store import append_in
from valetkey.storage.database import Database
from valetkey.storage.tables import deliveries, users, webhooks
from valetkey.vault.cipher import Envelope

_DELIVERY_FIELDS = tuple(f.name for f in dataclasses.fields(Delivery))


def _context(webhook_id: str) -> str:
    return f"webhooks/{webhook_id}/secret"


async def insert_deliveries(conn: AsyncConnection, planned: Sequence[Delivery]) -> None:
    """Queue notifications inside the caller's transaction: they exist iff the change does."""
    if planned:
        await conn.execute(deliveries.insert(), [dataclasses.asdict(d) for d in planned])


class SqlNotifyStore:
    def __init__(self, db: Database, envelope: Envelope) -> None:
        self._db = db
        self._envelope = envelope

    async def add_webhook(self, hook: Webhook, events: Sequence[AuditEvent]) -> Webhook:
        secret = self._envelope.encrypt(hook.secret.encode(), _context(hook.id))
        async with self._db.write() as conn:
            await conn.execute(webhooks.insert().values(
                id=hook.id, tenant_id=hook.tenant_id, url=hook.url, secret=secret,
                status=hook.status, created_at=hook.created_at,
            ))  # fmt: skip
            await append_in(conn, self._db.is_sqlite, events)
        return hook

    def _webhook(self, row: Any) -> Webhook:
        secret = self._envelope.decrypt(row.secret, _context(row.id)).decode()
        return Webhook(row.id, row.tenant_id, row.url, secret, row.status, row.created_at)

    async def list_webhooks(self, tenant_id: str) -> list[Webhook]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(webhooks).where(webhooks.c.tenant_id == tenant_id)
                .order_by(webhooks.c.created_at)
            )  # fmt: skip
            return [self._webhook(r) for r in rows]

    async def active_webhooks(self, tenant_id: str) -> list[Webhook]:
        return [w for w in await self.list_webhooks(tenant_id) if w.status == "active"]

    async def webhook(self, webhook_id: str) -> Webhook | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id))
            ).first()
        return self._webhook(row) if row is not None else None

    async def approver_emails(self, tenant_id: str) -> list[str]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(users.c.email, users.c.roles).where(
                    users.c.tenant_id == tenant_id, users.c.status == "active"
                )
            )
            return sorted(r.email for r in rows if {"approver", "admin"} & set(r.roles or ()))

    async def due(self, now: float, limit: int) -> list[Delivery]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(deliveries)
                .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now)
                .order_by(deliveries.c.next_attempt_at).limit(limit)
            )  # fmt: skip
            return [Delivery(**{n: getattr(r, n) for n in _DELIVERY_FIELDS}) for r in rows]

    async def claim(self, delivery: Delivery, until: float) -> bool:
        async with self._db.write() as conn:
            taken = await conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery.id, deliveries.c.status == "pending",
                       deliveries.c.next_attempt_at == delivery.next_attempt_at)
                .values(next_attempt_at=until)
            )  # fmt: skip
        return taken.rowcount == 1

    async def finish(self, delivery_id: str, fields: dict[str, Any]) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                deliveries.update().where(deliveries.c.id == delivery_id).values(**fields)
            )

    async def list_deliveries(self, tenant_id: str, limit: int = 200) -> list[Delivery]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(deliveries).where(deliveries.c.tenant_id == tenant_id)
                .order_by(deliveries.c.created_at.desc()).limit(limit)
            )  # fmt: skip
            return [Delivery(**{n: getattr(r, n) for n in _DELIVERY_FIELDS}) for r in rows]
