"""Console sign-in through a trusted issuer: its OAuth client at that issuer, the secret
envelope-encrypted and bound to its row."""

from collections.abc import Sequence

import sqlalchemy as sa

from valetkey.audit.events import AuditEvent
from valetkey.errors import NotFound
from valetkey.storage.audit_store import append_in
from valetkey.storage.database import Database
from valetkey.storage.tables import issuers
from valetkey.vault.cipher import Envelope


def _context(issuer_id: str) -> str:
    return f"issuers/{issuer_id}/login_client_secret"


class SqlSsoStore:
    def __init__(self, db: Database, envelope: Envelope) -> None:
        self._db = db
        self._envelope = envelope

    async def set_login(
        self, issuer_id: str, client_id: str, secret: str, label: str,
        events: Sequence[AuditEvent],
    ) -> None:  # fmt: skip
        sealed = self._envelope.encrypt(secret.encode(), _context(issuer_id))
        async with self._db.write() as conn:
            await conn.execute(
                issuers.update()
                .where(issuers.c.id == issuer_id)
                .values(login_client_id=client_id, login_client_secret=sealed, login_label=label)
            )
            await append_in(conn, self._db.is_sqlite, events)

    async def login_secret(self, issuer_id: str) -> str:
        async with self._db.read() as conn:
            sealed = await conn.scalar(
                sa.select(issuers.c.login_client_secret).where(issuers.c.id == issuer_id)
            )
        if sealed is None:
            raise NotFound("this issuer does not sign people in to the console")
        return self._envelope.decrypt(str(sealed), _context(issuer_id)).decode()
