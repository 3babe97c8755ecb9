"""Migration 0012 copies the verdict of every decision already in the log into the new
`decision` column (only for `decision.made`, whose verdict it is), on both backends."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from tests.support.databases import BACKENDS, new_database_url
from valetkey.storage.database import Database
from valetkey.storage.migrate import alembic_config, upgrade


@pytest.fixture(params=BACKENDS)
async def old(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = await asyncio.to_thread(new_database_url, request.param, tmp_path)
    database = Database(url)
    async with database.write() as conn:  # the schema as release 0011 left it
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0011"))
    yield database
    await database.dispose()


async def test_old_decisions_get_their_verdict(old: Database) -> None:
    rows = [
        ("decision.made", '{"decision": "deny"}'),
        ("decision.made", '{"decision": "allow"}'),
        ("decision.made", '{"decision": "maybe"}'),
        ("mcp.tool_called", '{"decision": "allow"}'),
        ("token.issued", '{"aud": "x"}'),
    ]
    async with old.write() as conn:
        await conn.execute(sa.text(
            "INSERT INTO tenants (id, name, settings, created_at, version) "
            "VALUES ('ten_a', 'a', '{}', 1, 1)"))  # fmt: skip
        for seq, (kind, data) in enumerate(rows, 1):
            await conn.execute(sa.text(
                "INSERT INTO audit_events (tenant_id, seq, id, type, ts_us, correlation_id, "
                "outcome, data, prev_hash, hash) VALUES ('ten_a', :seq, :id, :type, 1, 'c', "
                "'success', :data, 'p', 'h')"), {"seq": seq, "id": f"evt_{seq}", "type": kind,
                                                  "data": data})  # fmt: skip
    await upgrade(old)
    async with old.read() as conn:
        found = (await conn.execute(sa.text(
            "SELECT seq, decision FROM audit_events ORDER BY seq"))).all()  # fmt: skip
    assert [tuple(r) for r in found] == [(1, "deny"), (2, "allow"), (3, None), (4, None),
                                         (5, None)]  # fmt: skip
