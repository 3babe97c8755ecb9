"""One random secret per name, created by the first node that asks and sealed under the
key-encryption key; every node reads the same one."""

import os
import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from valetkey.storage.database import Database
from valetkey.storage.tables import instance_secrets
from valetkey.vault.cipher import Envelope


def _context(name: str) -> str:
    return f"instance_secrets/{name}"


async def instance_secret(db: Database, envelope: Envelope, name: str) -> bytes:
    async with db.read() as conn:
        sealed = await conn.scalar(
            sa.select(instance_secrets.c.secret).where(instance_secrets.c.name == name)
        )
    if sealed is None:
        fresh = envelope.encrypt(os.urandom(32), _context(name))
        try:
            async with db.write() as conn:
                await conn.execute(
                    instance_secrets.insert().values(
                        name=name, secret=fresh, created_at=time.time()
                    )
                )
        except IntegrityError:
            pass  # another node created it first: theirs stands
        async with db.read() as conn:
            sealed = await conn.scalar(
                sa.select(instance_secrets.c.secret).where(instance_secrets.c.name == name)
            )
    return envelope.decrypt(str(sealed), _context(name))
