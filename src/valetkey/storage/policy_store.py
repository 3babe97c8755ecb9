"""Actions and versioned policy sets in SQL (implements `policy.decision.PolicyStore` and
the service's writes). Every change bumps the tenant's version in the same transaction,
so each node's cached policies and actions reload on the next request."""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from valetkey.audit.events import AuditEvent
from valetkey.errors import Conflict, NotFound
from valetkey.policy.decision import ActionDef, PolicyVersion
from valetkey.storage.audit_store import append_in
from valetkey.storage.hot_path import HotReadStore
from valetkey.storage.identity_store import bump_tenant_version
from valetkey.storage.tables import actions, policy_versions

Events = Sequence[AuditEvent]


class SqlPolicyStore(HotReadStore):
    async def add_action(
        self, tenant_id: str, action: ActionDef, now: float, events: Events
    ) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(
                    actions.insert().values(
                        tenant_id=tenant_id, name=action.name, scope=action.scope,
                        action_class=action.klass, created_at=now,
                    )
                )  # fmt: skip
                await bump_tenant_version(conn, tenant_id)
                await append_in(conn, self._db.is_sqlite, events)
        except IntegrityError as exc:
            raise Conflict(f"action {action.name!r} already exists in this tenant") from exc

    async def list_actions(self, tenant_id: str) -> list[ActionDef]:
        found = await self._select(actions, tenant_id=tenant_id)
        return sorted(
            (ActionDef(r.name, r.action_class, r.scope) for r in found), key=lambda a: a.name
        )

    async def active_policy(self, tenant_id: str) -> PolicyVersion | None:
        found = await self._select(policy_versions, tenant_id=tenant_id, active=True)
        if not found:
            return None
        return PolicyVersion(found[0].version, found[0].text, tuple(found[0].entities or ()))

    async def history(self, tenant_id: str) -> list[dict[str, Any]]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(policy_versions)
                .where(policy_versions.c.tenant_id == tenant_id)
                .order_by(policy_versions.c.version.desc())
            )
            return [
                {"version": r.version, "active": r.active, "note": r.note,
                 "created_at": r.created_at, "text": r.text}
                for r in rows
            ]  # fmt: skip

    async def push(
        self,
        tenant_id: str,
        text: str,
        note: str,
        now: float,
        events: Events,
        entities: Sequence[dict[str, Any]] = (),
    ) -> int:
        """Store `text` as the next version and make it the active one."""
        async with self._db.write() as conn:
            await self._lock(conn, tenant_id)
            latest = await conn.scalar(
                sa.select(sa.func.max(policy_versions.c.version)).where(
                    policy_versions.c.tenant_id == tenant_id
                )
            )
            version = int(latest or 0) + 1
            await conn.execute(
                policy_versions.update()
                .where(policy_versions.c.tenant_id == tenant_id)
                .values(active=False)
            )
            await conn.execute(
                policy_versions.insert().values(
                    tenant_id=tenant_id, version=version, text=text, active=True, note=note,
                    created_at=now, entities=list(entities) or None,
                )
            )  # fmt: skip
            await bump_tenant_version(conn, tenant_id)
            await append_in(conn, self._db.is_sqlite, [_with(e, version) for e in events])
        return version

    async def activate(self, tenant_id: str, version: int, events: Events) -> None:
        async with self._db.write() as conn:
            await self._lock(conn, tenant_id)
            exists = await conn.scalar(
                sa.select(policy_versions.c.version).where(
                    policy_versions.c.tenant_id == tenant_id, policy_versions.c.version == version
                )
            )
            if exists is None:
                raise NotFound(f"no policy version {version}")
            await conn.execute(
                policy_versions.update()
                .where(policy_versions.c.tenant_id == tenant_id)
                .values(active=policy_versions.c.version == version)
            )
            await bump_tenant_version(conn, tenant_id)
            await append_in(conn, self._db.is_sqlite, events)

    async def _lock(self, conn: Any, tenant_id: str) -> None:
        if not self._db.is_sqlite:  # versions of one tenant are numbered one at a time
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:t, 11))"), {"t": tenant_id}
            )


def _with(event: AuditEvent, version: int) -> AuditEvent:
    return AuditEvent(
        event.type, event.tenant_id, event.ts, event.correlation_id, event.outcome,
        event.reason, event.agent_id, event.user_id, event.jti,
        {**event.data, "version": version},
    )  # fmt: skip
