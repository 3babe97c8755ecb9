"""The MCP gateway's upstreams in SQL (implements `mcp.upstreams.UpstreamStore` and the
gateway's `ActionSync` / `GrantedApprovals`). Every change that a gateway caches bumps the
tenant's version in its own transaction, with its audit events."""

import builtins
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from valetkey.audit.events import AuditEvent
from valetkey.errors import Conflict, NotFound
from valetkey.mcp.upstreams import ToolOverride, Upstream
from valetkey.policy.approvals import Approval
from valetkey.policy.decision import ActionDef
from valetkey.storage.audit_store import append_in
from valetkey.storage.database import Database
from valetkey.storage.identity_store import bump_tenant_version
from valetkey.storage.tables import actions, approvals, mcp_upstreams, tenants

Events = Sequence[AuditEvent]
_APPROVAL_FIELDS = tuple(f.name for f in dataclasses.fields(Approval))


def _upstream(row: Any) -> Upstream:
    return Upstream(
        row.id, row.tenant_id, row.name, row.url, row.provider, bool(row.sanitize),
        row.created_at, row.updated_at,
        {name: ToolOverride.from_json(o) for name, o in (row.tools or {}).items()},
    )  # fmt: skip


def _tools_json(upstream: Upstream) -> dict[str, Any]:
    return {name: o.to_json() for name, o in sorted(upstream.tools.items())}


class SqlMcpStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # upstreams -----------------------------------------------------------------------------
    async def add(self, upstream: Upstream, events: Events) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(mcp_upstreams.insert().values(
                    id=upstream.id, tenant_id=upstream.tenant_id, name=upstream.name,
                    url=upstream.url, provider=upstream.provider, sanitize=upstream.sanitize,
                    tools=_tools_json(upstream), created_at=upstream.created_at,
                    updated_at=upstream.updated_at,
                ))  # fmt: skip
                await bump_tenant_version(conn, upstream.tenant_id)  # gateways reload it
                await append_in(conn, self._db.is_sqlite, events)
        except IntegrityError as exc:
            raise Conflict(f"upstream {upstream.name!r} already exists in this tenant") from exc

    async def find(self, tenant_id: str, name: str) -> Upstream:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(mcp_upstreams).where(
                mcp_upstreams.c.tenant_id == tenant_id, mcp_upstreams.c.name == name,
            ))).first()  # fmt: skip
        if row is None:
            raise NotFound(f"no MCP upstream {name!r} in this tenant")
        return _upstream(row)

    async def remove(self, upstream: Upstream, events: Events) -> None:
        async with self._db.write() as conn:
            await conn.execute(mcp_upstreams.delete().where(mcp_upstreams.c.id == upstream.id))
            await bump_tenant_version(conn, upstream.tenant_id)
            await append_in(conn, self._db.is_sqlite, events)

    async def save_tools(
        self, upstream: Upstream, action: ActionDef | None, events: Events
    ) -> None:
        async with self._db.write() as conn:
            moved = await conn.execute(
                mcp_upstreams.update()
                .where(mcp_upstreams.c.id == upstream.id)
                .values(tools=_tools_json(upstream), updated_at=upstream.updated_at)
            )
            if moved.rowcount != 1:
                raise NotFound(f"no MCP upstream {upstream.name!r} in this tenant")
            if action is not None:
                await self._upsert_actions(conn, upstream.tenant_id, [action],
                                           upstream.updated_at)  # fmt: skip
            await bump_tenant_version(conn, upstream.tenant_id)
            await append_in(conn, self._db.is_sqlite, events)

    async def actions(self, tenant_id: str, prefix: str) -> builtins.list[ActionDef]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(actions)
                .where(actions.c.tenant_id == tenant_id,
                       actions.c.name.startswith(prefix, autoescape=True))
                .order_by(actions.c.name)
            )  # fmt: skip
            return [ActionDef(r.name, r.action_class, r.scope) for r in rows]

    # the gateway's actions -------------------------------------------------------------------
    async def sync_actions(
        self, tenant_id: str, wanted: Sequence[ActionDef],
        event: Callable[[Sequence[ActionDef]], AuditEvent],
    ) -> int:  # fmt: skip
        """Upsert the actions that differ from `wanted` (one transaction, one event, one
        version bump); the tenant's version after it."""
        async with self._db.write() as conn:
            names = [a.name for a in wanted]
            rows = await conn.execute(sa.select(actions).where(
                actions.c.tenant_id == tenant_id, actions.c.name.in_(names)))  # fmt: skip
            have = {r.name: ActionDef(r.name, r.action_class, r.scope) for r in rows}
            changed = [a for a in wanted if have.get(a.name) != a]
            if changed:
                registered = event(changed)
                await self._upsert_actions(conn, tenant_id, changed, registered.ts)
                await bump_tenant_version(conn, tenant_id)
                await append_in(conn, self._db.is_sqlite, [registered])
            version = await conn.scalar(sa.select(tenants.c.version).where(
                tenants.c.id == tenant_id))  # fmt: skip
        return int(version or 0)

    async def _upsert_actions(
        self, conn: AsyncConnection, tenant_id: str, defs: Sequence[ActionDef], now: float
    ) -> None:
        insert = (sqlite if self._db.is_sqlite else postgresql).insert(actions)
        statement = insert.on_conflict_do_update(
            index_elements=["tenant_id", "name"],
            set_={"action_class": insert.excluded.action_class, "scope": insert.excluded.scope},
        )
        await conn.execute(statement, [
            {"tenant_id": tenant_id, "name": a.name, "action_class": a.klass, "scope": a.scope,
             "created_at": now} for a in defs
        ])  # fmt: skip

    # approvals the gateway may spend without being told their id ---------------------------
    async def find_granted(
        self, tenant_id: str, agent_id: str, delegation_key: str | None, digest: str, now: float
    ) -> builtins.list[Approval]:
        c = approvals.c
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(approvals)
                .where(c.tenant_id == tenant_id, c.status == "approved", c.agent_id == agent_id,
                       c.intent_hash == digest, c.expires_at > now)
                .order_by(c.created_at)
                .limit(50)
            )  # fmt: skip
            return [Approval(**{name: getattr(r, name) for name in _APPROVAL_FIELDS})
                    for r in rows if r.delegation_key == delegation_key]  # fmt: skip

    async def list(self, tenant_id: str) -> builtins.list[Upstream]:
        async with self._db.read() as conn:
            rows = await conn.execute(sa.select(mcp_upstreams).where(
                mcp_upstreams.c.tenant_id == tenant_id).order_by(mcp_upstreams.c.name))  # fmt: skip
            return [_upstream(r) for r in rows]
