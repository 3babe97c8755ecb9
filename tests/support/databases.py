"""Fresh, empty databases for a test: a SQLite file, or a new database on the test cluster."""

import asyncio
import os
import secrets
from pathlib import Path

import asyncpg
import pytest

BACKENDS = ["sqlite", "postgresql"]


def pg_admin_url() -> str | None:
    url = os.environ.get("VALETKEY_TEST_PG_URL")
    if not url and os.environ.get("CI"):
        pytest.fail("CI runs every test on PostgreSQL too: VALETKEY_TEST_PG_URL is not set")
    return url or None


def new_database_url(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp / 'valetkey.db'}"
    admin = pg_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL tests run under `make test` (VALETKEY_TEST_PG_URL unset)")
    name = "vk_" + secrets.token_hex(6)

    async def create() -> None:
        conn = await asyncpg.connect(admin.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return admin.rsplit("/", 1)[0] + "/" + name
