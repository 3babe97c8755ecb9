"""Apply Alembic migrations; called by `valetkey serve` and `valetkey db upgrade`."""

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from valetkey.storage.database import Database

_SCRIPTS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x76616C65  # "vale": one migrator at a time across nodes


def alembic_config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = connection
    return config


async def upgrade(db: Database) -> str:
    """Bring the schema to the newest revision; returns it. Safe to run from several nodes."""
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
        revision: str = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision() or ""
        )
    return revision


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return head or ""
