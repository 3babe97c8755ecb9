"""Authorization codes and refresh tokens in SQL (implements `oauth.sessions.SessionStore`).

Single use is a conditional UPDATE inside the write transaction: on SQLite the transaction
holds the database's write lock from BEGIN; on PostgreSQL the row lock makes a concurrent
UPDATE wait and then re-check its WHERE clause against the committed row, so it matches
nothing. Either way exactly one of any number of concurrent uses succeeds.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from valetkey.audit.events import AuditEvent
from valetkey.oauth.sessions import AuthorizationCode, CodeUse, RefreshRecord
from valetkey.storage.audit_store import append_in
from valetkey.storage.hot_path import HotReadStore
from valetkey.storage.tables import authorization_codes, refresh_tokens, revoked_tokens

T = TypeVar("T", AuthorizationCode, RefreshRecord)


def _record(cls: type[T], row: Any) -> T:
    """A row as the dataclass of the same field names (JSON lists become tuples)."""
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(cls)}
    values["scopes"] = tuple(values["scopes"])
    return cls(**values)


class SqlSessionStore(HotReadStore):
    async def save_code(self, code: AuthorizationCode, events: Sequence[AuditEvent] = ()) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                authorization_codes.delete().where(
                    authorization_codes.c.expires_at < code.created_at - 3600
                )
            )
            await conn.execute(
                authorization_codes.insert().values(
                    digest=code.digest,
                    tenant_id=code.tenant_id,
                    client_id=code.client_id,
                    user_id=code.user_id,
                    delegation_id=code.delegation_id,
                    redirect_uri=code.redirect_uri,
                    scopes=list(code.scopes),
                    resource=code.resource,
                    code_challenge=code.code_challenge,
                    dpop_jkt=code.dpop_jkt,
                    mandate=code.mandate,
                    created_at=code.created_at,
                    expires_at=code.expires_at,
                )
            )
            await append_in(conn, self._db.is_sqlite, events)

    async def use_code(
        self, code_digest: str, client_id: str, family_id: str, now: float
    ) -> CodeUse:
        table = authorization_codes
        async with self._db.write() as conn:
            row = (
                await conn.execute(
                    sa.select(table).where(table.c.digest == code_digest).with_for_update()
                )
            ).first()
            if row is None or row.client_id != client_id:
                return CodeUse(None)  # unknown, or another client's: it cannot burn the code
            spent = await conn.execute(
                table.update()
                .where(table.c.digest == code_digest, table.c.used_at.is_(None))
                .values(used_at=now, family_id=family_id)
            )
            if spent.rowcount == 1:
                return CodeUse(_record(AuthorizationCode, row))
            if row.family_id is not None:
                await self._lock_family(conn, row.family_id)
                # Replayed: mark it, so a first redemption still in flight cannot start its
                # session after the revocation has run (see `rotate_refresh`).
                await conn.execute(
                    table.update().where(table.c.digest == code_digest).values(expires_at=-1.0)
                )
        return CodeUse(None, reused_family=row.family_id)

    async def _lock_family(self, conn: AsyncConnection, family_id: str) -> None:
        """Serialise a family's rotations, replays and revocation. PostgreSQL runs READ
        COMMITTED: without it a revocation could miss the token a concurrent rotation is
        inserting. SQLite's BEGIN IMMEDIATE already holds the only write lock."""
        if not self._db.is_sqlite:
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:f, 7))"), {"f": family_id}
            )

    async def refresh_record(self, token_digest: str) -> RefreshRecord | None:
        found = await self._select(refresh_tokens, digest=token_digest)
        return _record(RefreshRecord, found[0]) if found else None

    async def rotate_refresh(self, previous: str | None, record: RefreshRecord, now: float) -> bool:
        async with self._db.write() as conn:
            await self._lock_family(conn, record.family_id)
            if previous is None:  # a session's first token: its code must not be replayed
                replayed = await conn.scalar(
                    sa.select(authorization_codes.c.digest).where(
                        authorization_codes.c.family_id == record.family_id,
                        authorization_codes.c.expires_at < 0,
                    )
                )
                if replayed is not None:
                    return False
            if previous is not None:
                spent = await conn.execute(
                    refresh_tokens.update()
                    .where(refresh_tokens.c.digest == previous, refresh_tokens.c.status == "active")
                    .values(status="used", used_at=now)
                )
                if spent.rowcount != 1:
                    return False  # nothing written: the transaction commits no change
            await conn.execute(
                refresh_tokens.insert().values(
                    digest=record.digest,
                    family_id=record.family_id,
                    tenant_id=record.tenant_id,
                    client_id=record.client_id,
                    user_id=record.user_id,
                    delegation_id=record.delegation_id,
                    scopes=list(record.scopes),
                    resource=record.resource,
                    dpop_jkt=record.dpop_jkt,
                    mandate=record.mandate,
                    generation=record.generation,
                    access_jti=record.access_jti,
                    access_exp=record.access_exp,
                    status="active",
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                )
            )
        return True

    async def revoke_family(
        self, family_id: str, now: float, events: Sequence[AuditEvent] = ()
    ) -> int:
        async with self._db.write() as conn:
            await self._lock_family(conn, family_id)
            members = (
                await conn.execute(
                    sa.select(
                        refresh_tokens.c.access_jti,
                        refresh_tokens.c.access_exp,
                        refresh_tokens.c.tenant_id,
                        refresh_tokens.c.status,
                    ).where(refresh_tokens.c.family_id == family_id)
                )
            ).all()
            await conn.execute(
                refresh_tokens.update()
                .where(refresh_tokens.c.family_id == family_id)
                .values(status="revoked")
            )
            already = set(
                (
                    await conn.execute(
                        sa.select(revoked_tokens.c.jti).where(
                            revoked_tokens.c.jti.in_([m.access_jti for m in members])
                        )
                    )
                ).scalars()
            )
            for member in members:
                if member.access_exp > now and member.access_jti not in already:
                    try:
                        async with conn.begin_nested():
                            await conn.execute(
                                revoked_tokens.insert().values(
                                    jti=member.access_jti,
                                    tenant_id=member.tenant_id,
                                    expires_at=member.access_exp,
                                    revoked_at=now,
                                )
                            )
                    except IntegrityError:
                        pass  # revoked concurrently: the outcome is the same
            await append_in(conn, self._db.is_sqlite, events)
        return sum(1 for m in members if m.status == "active")
