"""The two hottest storage calls on the raw drivers: loading a client to authenticate it,
and appending audit events. Everything else stays on SQLAlchemy.

Why hand-written: through SQLAlchemy's async engine each call cost ~1.5 ms of CPU on these
2-core machines (aiosqlite hops to a thread per statement; pool checkout and greenlet
switches on top), which held token issuance near 450/s. On SQLite the same indexed read
with the stdlib driver takes tens of microseconds, less than one thread hop, so it runs
inline on the event loop (a WAL reader never waits for a writer); the audit commit, which
fsyncs, runs on one writer thread, and an advisory file lock hands the write lock from one
worker process to the next without SQLite's busy-wait sleeps. On PostgreSQL, asyncpg's own
pool. The storage contract tests run on these implementations too.
"""

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, Protocol, Self

import asyncpg
import orjson
import sqlalchemy as sa

from valetkey.audit.chain import GENESIS
from valetkey.audit.events import AuditEvent, StoredEvent
from valetkey.oauth.context import ClientContext
from valetkey.storage import rows
from valetkey.storage.audit_store import COUNTER_UPSERT, chain_event, counter_rows
from valetkey.storage.database import Database

_CLIENT_COLUMNS = (
    "id", "tenant_id", "kind", "name", "status", "secrets", "jwks", "scopes", "rights",
    "sponsor_id", "address", "description", "needs_sponsor", "revoked_before", "created_at",
    "updated_at", "redirect_uris", "public",
)  # fmt: skip
_JSON_COLUMNS = ("secrets", "jwks", "scopes", "rights", "redirect_uris")


def context_sql(param: str) -> str:
    """One query for the client, its tenant and the active signing key id, in the dialect's
    parameter style (`?`, `$1`, `:client_id`)."""
    columns = ", ".join(f"c.{name}" for name in _CLIENT_COLUMNS)
    return (
        f"SELECT {columns}, t.name, t.settings, t.version, t.created_at, "  # noqa: S608
        "(SELECT kid FROM signing_keys WHERE status = 'active' LIMIT 1) "
        f"FROM clients c JOIN tenants t ON t.id = c.tenant_id WHERE c.id = {param}"
    )


_EVENT_COLUMNS = (
    "tenant_id, seq, id, type, ts_us, correlation_id, outcome, reason, agent_id, user_id, "
    "jti, data, prev_hash, hash, decision"
)


class _Busy(Exception):
    """SQLite's write lock is held elsewhere; retry after yielding to the event loop."""


class HotPath(Protocol):
    async def load_client_context(self, client_id: str) -> ClientContext | None: ...

    async def fetch(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        """Rows of a read-only query written with `?` placeholders (any backend)."""
        ...

    async def append(self, events: Sequence[AuditEvent]) -> None: ...

    async def close(self) -> None: ...


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def context_from_row(row: Sequence[Any]) -> ClientContext:
    """A `context_sql` row as models, through the same converters as every other read."""
    values = dict(zip(_CLIENT_COLUMNS, row, strict=False))
    for name in _JSON_COLUMNS:
        values[name] = _json(values[name])
    n = len(_CLIENT_COLUMNS)
    tenant = SimpleNamespace(
        id=values["tenant_id"],
        name=row[n],
        settings=_json(row[n + 1]),
        version=row[n + 2],
        created_at=row[n + 3],
    )
    return ClientContext(rows.client(SimpleNamespace(**values)), rows.tenant(tenant), row[n + 4])


def _row(event: StoredEvent, encode_data: bool = True) -> tuple[Any, ...]:
    return (
        event.tenant_id,
        event.seq,
        event.id,
        event.type,
        event.ts_us,
        event.correlation_id,
        event.outcome,
        event.reason,
        event.agent_id,
        event.user_id,
        event.jti,
        orjson.dumps(event.data).decode() if encode_data else event.data,
        event.prev_hash,
        event.hash,
        event.decision,
    )


def _chain_all(
    events: Sequence[AuditEvent], heads: dict[str, tuple[int, str]], encode_data: bool = True
) -> list[tuple[Any, ...]]:
    rows = []
    for event in events:
        seq, prev = heads[event.tenant_id]
        stored = chain_event(event, seq + 1, prev)
        heads[event.tenant_id] = (stored.seq, stored.hash)
        rows.append(_row(stored, encode_data))
    return rows


class SqliteHotPath:
    """`inline_commits`: commit on the event loop instead of the writer thread. With several
    worker processes that measured 2,700 → 3,700 tokens/s (no GIL contention with the
    thread; while one process fsyncs, the other serves). With one process it stalls the
    only event loop during each fsync, so it is off there."""

    def __init__(
        self, path: str, busy_timeout_ms: int = 10000, *, inline_commits: bool = False
    ) -> None:
        self._path = path
        self._inline = inline_commits
        self._busy_timeout_ms = busy_timeout_ms
        self._reader = self._connect()
        self._reader.execute("PRAGMA query_only=1")
        self._writer: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="valetkey-audit")
        self._lock_fd = os.open(path + ".audit-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._context_sql = context_sql("?")
        # The whole batch in one statement: one row per element of a JSON array.
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(15))
        self._insert_sql = (
            f"INSERT INTO audit_events ({_EVENT_COLUMNS}) "  # noqa: S608 (constant text)
            f"SELECT {picks} FROM json_each(?)"
        )
        self._known_heads: set[str] = set()

    def _connect(self, busy_timeout_ms: int | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        timeout = self._busy_timeout_ms if busy_timeout_ms is None else busy_timeout_ms
        conn.execute(f"PRAGMA busy_timeout={int(timeout)}")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    async def load_client_context(self, client_id: str) -> ClientContext | None:
        row = self._reader.execute(self._context_sql, (client_id,)).fetchone()
        return context_from_row(row) if row is not None else None

    async def fetch(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        return self._reader.execute(sql, params).fetchall()

    async def append(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        if not self._inline:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._append_sync, list(events))
            return
        # Never block the event loop on a lock: another coroutine of this very process may
        # hold SQLite's write lock (an aiosqlite transaction) and need the loop to finish.
        batch = list(events)
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                try:
                    self._commit(batch)
                    return
                except _Busy:
                    pass
                finally:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("database is locked (audit commit timed out)")
            await asyncio.sleep(0.0002)

    def _append_sync(self, events: list[AuditEvent]) -> None:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._commit(events)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _commit(self, events: list[AuditEvent]) -> None:
        """One transaction; the caller holds the cross-process file lock."""
        if self._writer is None:  # inline: fail fast on a busy lock, the caller retries
            self._writer = self._connect(0 if self._inline else None)
        conn = self._writer
        tenants = sorted({e.tenant_id for e in events})
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if self._inline and "locked" in str(exc):
                raise _Busy from exc  # the caller yields to the loop and tries again
            raise
        try:
            new = [t for t in tenants if t not in self._known_heads]
            if new:  # head rows are never deleted: create each at most once per process
                conn.executemany(
                    "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?, 0, ?) "
                    "ON CONFLICT (tenant_id) DO NOTHING",
                    [(t, GENESIS) for t in new],
                )
            marks = ", ".join("?" * len(tenants))
            heads = {
                r[0]: (r[1], r[2])
                for r in conn.execute(
                    f"SELECT tenant_id, seq, hash FROM audit_heads "  # noqa: S608
                    f"WHERE tenant_id IN ({marks})",
                    tenants,
                )
            }
            rows = _chain_all(events, heads, encode_data=False)
            conn.execute(self._insert_sql, (orjson.dumps(rows),))
            moves = counter_rows(events)
            if moves:
                conn.executemany(COUNTER_UPSERT, moves)
            conn.executemany(
                "UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant_id = ?",
                [(heads[t][0], heads[t][1], t) for t in tenants],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._known_heads.update(tenants)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_writer)
        self._executor.shutdown(wait=True)
        self._reader.close()
        os.close(self._lock_fd)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@functools.lru_cache(maxsize=64)
def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, …` (the queries hold no literal `?`)."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))


class _LeanConnection(asyncpg.Connection):  # type: ignore[misc]
    """No reset query when the pool takes a connection back. The hot path sets no session
    state, LISTENs to nothing and takes advisory locks only inside transactions (released at
    commit), so asyncpg's default `RESET ALL; UNLISTEN *; …` round trip on every release
    would buy nothing; it measured 7% of a token exchange's CPU. An open transaction is
    still rolled back by asyncpg itself."""

    def get_reset_query(self) -> str:
        return ""


class PostgresHotPath:
    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._context_sql = context_sql("$1")
        self._known_heads: set[str] = set()
        # Insert the batch and move the heads in one round trip (arrays, one per column).
        types = ("text", "int8", "text", "text", "int8", "text", "text", "text", "text",
                 "text", "text", "json", "text", "text", "text")  # fmt: skip
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        self._append_sql = (
            f"WITH ins AS (INSERT INTO audit_events ({_EVENT_COLUMNS}) "  # noqa: S608 (constant)
            f"SELECT * FROM unnest({arrays})) "
            "UPDATE audit_heads SET seq = h.seq, hash = h.hash "
            "FROM unnest($16::text[], $17::int8[], $18::text[]) AS h(tenant_id, seq, hash) "
            "WHERE audit_heads.tenant_id = h.tenant_id"
        )

    @classmethod
    async def open(cls, url: str, max_size: int = 16) -> "PostgresHotPath":
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=max_size, connection_class=_LeanConnection
        )
        return cls(pool)

    async def load_client_context(self, client_id: str) -> ClientContext | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(self._context_sql, client_id)
        return context_from_row(row) if row is not None else None

    async def fetch(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(_numbered(sql), *params))

    async def append(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        tenants = sorted({e.tenant_id for e in events})  # fixed lock order: no deadlocks
        async with self._pool.acquire() as conn, conn.transaction():
            new = [t for t in tenants if t not in self._known_heads]
            if new:  # head rows are never deleted: create each at most once per process
                await conn.executemany(
                    "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) "
                    "ON CONFLICT (tenant_id) DO NOTHING",
                    [(t, GENESIS) for t in new],
                )
            rows = await conn.fetch(
                "SELECT tenant_id, seq, hash FROM audit_heads WHERE tenant_id = ANY($1::text[]) "
                "ORDER BY tenant_id FOR UPDATE",
                tenants,
            )
            heads = {r[0]: (r[1], r[2]) for r in rows}
            columns = [list(column) for column in zip(*_chain_all(events, heads), strict=True)]
            await conn.execute(
                self._append_sql,
                *columns,
                tenants,
                [heads[t][0] for t in tenants],
                [heads[t][1] for t in tenants],
            )
            moves = counter_rows(events)
            if moves:
                await conn.executemany(_numbered(COUNTER_UPSERT), moves)
        self._known_heads.update(tenants)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._pool.close()


async def open_hot_path(url: str, busy_timeout_ms: int, *, inline_commits: bool = False) -> HotPath:
    if url.startswith("sqlite"):
        return SqliteHotPath(url.split("///", 1)[1], busy_timeout_ms, inline_commits=inline_commits)
    return await PostgresHotPath.open(url)


class RowReader(Protocol):
    async def fetch(self, sql: str, *params: Any) -> list[Sequence[Any]]: ...


@functools.lru_cache(maxsize=64)
def _select_sql(table: str, columns: tuple[str, ...], keys: tuple[str, ...]) -> str:
    where = " AND ".join(f"{key} = ?" for key in keys)
    return f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"  # noqa: S608 (names)


async def select_where(
    db: Database, hot: RowReader | None, table: sa.Table, **equals: Any
) -> list[Any]:
    """Rows of `table` whose columns equal `equals`, as attribute records — through the raw
    driver when a hot path is open (a few µs on SQLite instead of a thread hop), else
    through SQLAlchemy. Either way the same row shape reaches the `rows` converters."""
    if hot is None:
        query = sa.select(table).where(*(table.c[k] == v for k, v in equals.items()))
        async with db.read() as conn:
            return list(await conn.execute(query))
    names = tuple(c.name for c in table.columns)
    json_columns = [c.name for c in table.columns if isinstance(c.type, sa.JSON)]
    found = []
    for row in await hot.fetch(_select_sql(table.name, names, tuple(equals)), *equals.values()):
        values = dict(zip(names, row, strict=True))
        for name in json_columns:
            values[name] = _json(values[name])
        found.append(SimpleNamespace(**values))
    return found


class HotReadStore:
    """Base of the stores whose token-path reads may go through the raw-driver hot path:
    the same store, `with_hot_path`, reads with `_select` and writes through SQLAlchemy."""

    def __init__(self, db: Database, hot: RowReader | None = None) -> None:
        self._db = db
        self._hot = hot

    def with_hot_path(self, hot: RowReader) -> Self:
        return type(self)(self._db, hot)

    async def _select(self, table: sa.Table, **equals: Any) -> list[Any]:
        return await select_where(self._db, self._hot, table, **equals)
