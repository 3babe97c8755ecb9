"""Every column that holds an envelope ciphertext, and re-wrapping them under a new master
key one row at a time (each row its own small transaction, compare-and-set on the old
ciphertext), so an interrupted rotation loses nothing and simply resumes."""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import sqlalchemy as sa

from valetkey.storage.database import Database
from valetkey.storage.tables import (
    connect_states,
    connections,
    instance_secrets,
    issuers,
    providers,
    signing_keys,
    webhooks,
)
from valetkey.vault.cipher import Envelope


@dataclass(frozen=True, slots=True)
class SealedColumn:
    table: sa.Table
    key: str
    column: str
    context: Callable[[str], str]  # the row's AAD, exactly as the writer used it


SEALED = (
    SealedColumn(signing_keys, "kid", "private_key", lambda kid: f"signing_key:{kid}"),
    SealedColumn(webhooks, "id", "secret", lambda ident: f"webhooks/{ident}/secret"),
    SealedColumn(
        providers, "id", "client_secret", lambda ident: f"providers/{ident}/client_secret"
    ),
    SealedColumn(connections, "id", "tokens", lambda ident: f"connections/{ident}/tokens"),
    SealedColumn(connect_states, "id", "verifier", lambda ident: f"connect_states/{ident}"),
    SealedColumn(instance_secrets, "name", "secret", lambda name: f"instance_secrets/{name}"),
    SealedColumn(
        issuers, "id", "login_client_secret", lambda ident: f"issuers/{ident}/login_client_secret"
    ),
)


async def count_sealed(db: Database) -> int:
    async with db.read() as conn:
        total = 0
        for sealed in SEALED:
            column = sealed.table.c[sealed.column]
            query = sa.select(sa.func.count()).select_from(sealed.table).where(column.is_not(None))
            total += int(await conn.scalar(query) or 0)
        return total


async def rewrap_all(db: Database, envelope: Envelope) -> AsyncIterator[bool]:
    """Re-wrap every sealed value under the envelope's primary key; yields, per row,
    whether it changed."""
    for sealed in SEALED:
        key_col, value_col = sealed.table.c[sealed.key], sealed.table.c[sealed.column]
        async with db.read() as conn:
            rows = (
                await conn.execute(sa.select(key_col, value_col).where(value_col.is_not(None)))
            ).all()
        for ident, ciphertext in rows:
            fresh = envelope.rewrap(str(ciphertext), sealed.context(str(ident)))
            if fresh is not None:
                async with db.write() as conn:
                    await conn.execute(
                        sealed.table.update()
                        .where(key_col == ident, value_col == ciphertext)
                        .values({sealed.column: fresh})
                    )
            yield fresh is not None
