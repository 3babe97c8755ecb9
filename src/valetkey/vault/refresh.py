"""A usable platform access token for a connection, refreshing it when due — and never
two refreshes of one connection at once, on any number of coroutines, worker processes
or nodes. Racing refreshes are the most common way agent integrations log their users
out: with rotating refresh tokens the loser presents a token the winner just spent, and
a platform that detects reuse revokes the whole grant.

How: a per-process lock for the coroutines of one process, and a lease in the database
for everyone else — taken by compare-and-set on the row's version, after re-reading the
row (someone may have refreshed while we waited). The new tokens are written only if the
stored version is still the one that was read and the lease is still ours, in one
transaction with the rotated refresh token and the audit event. The lease is not a held
transaction: SQLite has one writer, and a platform can take seconds to answer.

Only `invalid_grant` marks a connection `needs_reauth` (and tells its owner); a 5xx, a
timeout or a network error releases the lease and leaves the stored tokens untouched."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.errors import NotFound
from valetkey.ids import new_id
from valetkey.notify.outbox import Delivery
from valetkey.vault import platform
from valetkey.vault.connections import Connection, PlatformTokens
from valetkey.vault.providers import Provider

log = logging.getLogger("valetkey.vault")
LEASE_SECONDS = 30.0  # longer than a token request may take (platform.MAX_TOKEN_TIMEOUT)
POLL_SECONDS = 0.05
MAX_WAIT_SECONDS = LEASE_SECONDS + 10.0


@dataclass(frozen=True, slots=True)
class Slot:
    """A connection's row as the refresh logic reads it."""

    connection: Connection
    tokens: PlatformTokens | None
    refresh_after: float | None
    lease_until: float | None


@dataclass(frozen=True, slots=True)
class Refreshed:
    tokens: PlatformTokens
    expires_at: float | None
    refresh_after: float | None
    scopes: tuple[str, ...] | None


class RefreshStore(Protocol):
    async def slot(self, connection_id: str) -> Slot: ...
    async def take_lease(
        self, connection_id: str, version: int, holder: str, now: float, until: float
    ) -> bool: ...
    async def save_refreshed(
        self,
        connection_id: str,
        version: int,
        holder: str,
        refreshed: Refreshed,
        now: float,
        events: Sequence[AuditEvent],
    ) -> bool: ...
    async def release(
        self, connection_id: str, holder: str, events: Sequence[AuditEvent]
    ) -> None: ...
    async def mark_needs_reauth(
        self,
        connection_id: str,
        holder: str,
        now: float,
        events: Sequence[AuditEvent],
        deliveries: Sequence[Delivery],
    ) -> bool: ...


class DueSource(Protocol):
    async def due(self, now: float, limit: int) -> list[tuple[str, str, str]]:
        """(connection id, tenant id, provider id) of active connections due a refresh."""
        ...


class ProviderSource(Protocol):
    async def by_id(self, tenant_id: str, provider_id: str) -> Provider: ...
    async def client_secret(self, provider: Provider) -> str: ...


Planner = Callable[[Connection, str], Awaitable[list[Delivery]]]


class ConnectionUnusable(Exception):
    """The connection cannot give tokens until its owner acts (409 for the gateway)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def schedule(
    provider: Provider, expires_in: int | None, now: float
) -> tuple[float | None, float | None]:
    """(expires_at, refresh_after) for a fresh access token: refresh `before_expiry`
    seconds ahead, but never in the first half of a short-lived token's life; and at least
    every N hours when the platform revokes idle grants."""
    policy = provider.config.refresh
    expires_at = refresh_after = None
    if expires_in:
        expires_at = now + expires_in
        refresh_after = now + expires_in - min(policy.before_expiry, expires_in / 2)
    if policy.at_least_every_hours:
        every = now + policy.at_least_every_hours * 3600
        refresh_after = every if refresh_after is None else min(refresh_after, every)
    return expires_at, refresh_after


def _usable(slot: Slot, now: float, stale_version: int | None) -> bool:
    return (
        slot.connection.status == "active"
        and slot.tokens is not None
        and bool(slot.tokens.access_token)
        and slot.connection.version != stale_version
        and (slot.refresh_after is None or now < slot.refresh_after)
    )


class TokenVault:
    def __init__(
        self,
        store: RefreshStore,
        providers: ProviderSource,
        http: httpx.AsyncClient,
        clock: Clock,
        planner: Planner | None = None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._http = http
        self._clock = clock
        self._planner = planner
        self._locks: dict[str, asyncio.Lock] = {}

    async def access(
        self, connection_id: str, *, stale_version: int | None = None, cid: str = "",
        read: Slot | None = None,
    ) -> tuple[PlatformTokens, int]:  # fmt: skip
        """A usable access token and the row version it belongs to. `stale_version`: the
        platform refused that version's token (a 401) — refresh unless someone has.
        `read`: the row as the caller just read it (saves a read when it is fresh)."""
        slot = read if read is not None else await self._store.slot(connection_id)
        if _usable(slot, self._clock.now(), stale_version):
            assert slot.tokens is not None
            return slot.tokens, slot.connection.version
        lock = self._locks.setdefault(connection_id, asyncio.Lock())
        async with lock:
            return await self._refresh_once(connection_id, stale_version, cid)

    async def _refresh_once(
        self, connection_id: str, stale_version: int | None, cid: str
    ) -> tuple[PlatformTokens, int]:
        deadline = self._clock.now() + MAX_WAIT_SECONDS
        while True:
            slot = await self._store.slot(connection_id)  # re-read: it may be fresh by now
            connection, now = slot.connection, self._clock.now()
            if connection.status != "active":
                raise _unusable(connection)
            if _usable(slot, now, stale_version):
                assert slot.tokens is not None
                return slot.tokens, connection.version
            if slot.lease_until is not None and slot.lease_until > now:
                if now > deadline:  # pragma: no cover - a lease outlives its holder's wait
                    raise platform.PlatformTimeout("another node's refresh did not finish")
                await asyncio.sleep(POLL_SECONDS)  # another process or node is refreshing
                continue
            holder = new_id("lease")
            if await self._store.take_lease(
                connection_id, connection.version, holder, now, now + LEASE_SECONDS
            ):
                return await self._refresh(slot, holder, cid)

    async def _refresh(self, slot: Slot, holder: str, cid: str) -> tuple[PlatformTokens, int]:
        connection = slot.connection
        provider = await self._providers.by_id(connection.tenant_id, connection.provider_id)
        started = self._clock.now()
        try:
            secret = await self._providers.client_secret(provider)
            issued = await platform.refresh(
                self._http, provider, secret, slot.tokens or PlatformTokens(None)
            )
        except platform.PlatformRefused as exc:
            if not exc.grant_gone:
                await self._store.release(
                    connection.id,
                    holder,
                    [self._event("connection.refresh_failed", connection, cid, str(exc))],
                )
                raise
            now = self._clock.now()
            deliveries = await self._planner(connection, str(exc)) if self._planner else []
            await self._store.mark_needs_reauth(
                connection.id,
                holder,
                now,
                [self._event("connection.needs_reauth", connection, cid, str(exc))],
                deliveries,
            )
            raise ConnectionUnusable(
                "connection_needs_reauth",
                f"the platform no longer accepts this {connection.provider} connection; "
                "its owner must connect again",
            ) from exc
        except BaseException as exc:  # 5xx, timeout, cancellation: the tokens stay as they are
            await asyncio.shield(
                self._store.release(
                    connection.id,
                    holder,
                    [
                        self._event(
                            "connection.refresh_failed",
                            connection,
                            cid,
                            f"{type(exc).__name__}: {exc}",
                        )
                    ],
                )
            )
            raise
        now = self._clock.now()
        expires_at, refresh_after = schedule(provider, issued.expires_in, now)
        refreshed = Refreshed(issued.tokens, expires_at, refresh_after, issued.scopes)
        rotated = issued.tokens.refresh_token != (
            slot.tokens.refresh_token if slot.tokens else None
        )
        event = self._event(
            "connection.refreshed",
            connection,
            cid,
            None,
            rotated=rotated,
            latency_ms=round((now - started) * 1000, 1),
        )
        if not await self._store.save_refreshed(
            connection.id, connection.version, holder, refreshed, now, [event]
        ):
            # Our lease ran out while the platform answered and someone else refreshed:
            # their tokens stand. (A rotating platform has then spent ours; nothing to save.)
            log.warning(
                "refresh of %s finished after its lease; keeping the newer tokens", connection.id
            )
            fresh = await self._store.slot(connection.id)
            if fresh.tokens is None or fresh.connection.status != "active":
                raise _unusable(fresh.connection)
            return fresh.tokens, fresh.connection.version
        return issued.tokens, connection.version + 1

    async def refresh_now(self, connection_id: str, cid: str = "") -> int:
        """Refresh whatever the token's state (an admin testing a connection); the new
        version. Single-flight like any refresh."""
        slot = await self._store.slot(connection_id)
        _, version = await self.access(
            connection_id, stale_version=slot.connection.version, cid=cid
        )
        return version

    async def refresh_idle(self, due: DueSource, cid: str, limit: int = 200) -> int:
        """Refresh the connections of providers that revoke idle grants (`refresh.
        at_least_every_hours`) once they are due, used or not. The server runs it every
        few minutes; `valetkey connections refresh --due` runs it once."""
        done = 0
        for connection_id, tenant_id, provider_id in await due.due(self._clock.now(), limit):
            try:
                provider = await self._providers.by_id(tenant_id, provider_id)
                if not provider.config.refresh.at_least_every_hours:
                    continue
                await self.access(connection_id, cid=cid)
                done += 1
            except (ConnectionUnusable, platform.PlatformError, NotFound) as exc:
                log.info("idle refresh of %s skipped: %s", connection_id, exc)
        return done

    def _event(
        self, type: str, connection: Connection, cid: str, reason: str | None, **data: object
    ) -> AuditEvent:
        return AuditEvent(
            type,
            connection.tenant_id,
            self._clock.now(),
            cid,
            outcome="failure" if reason else "success",
            reason=reason,
            agent_id=connection.owner_id if connection.owner_kind == "agent" else None,
            user_id=connection.owner_id if connection.owner_kind == "user" else None,
            data={"connection_id": connection.id, "provider": connection.provider, **data},
        )


def _unusable(connection: Connection) -> ConnectionUnusable:
    if connection.status == "needs_reauth":
        return ConnectionUnusable(
            "connection_needs_reauth",
            f"the {connection.provider} connection needs its owner to connect again",
        )
    return ConnectionUnusable(
        "connection_revoked", f"the {connection.provider} connection was revoked"
    )
