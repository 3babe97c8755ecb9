"""The outbox: every notification is a row written in the same transaction as the change
that caused it (so none is lost on a crash), then delivered by a background dispatcher on
every node. A delivery is claimed with a compare-and-set lease, so two workers never send
the same one twice at once; failures retry with backoff and every attempt is logged.
"""

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiosmtplib
import httpx
import orjson

from valetkey.clock import Clock
from valetkey.ids import new_id
from valetkey.notify.messages import email_for, signature

log = logging.getLogger("valetkey.notify")
BACKOFF = (1, 5, 30, 120, 600, 1800, 3600)  # seconds before attempt 2, 3, …
MAX_ATTEMPTS = len(BACKOFF) + 1
LEASE = 60.0
TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    tenant_id: str
    channel: Literal["webhook", "email"]
    target: str  # a webhook id, or an email address
    event_type: str
    payload: dict[str, Any]
    created_at: float
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    tenant_id: str
    url: str
    secret: str  # plaintext here; encrypted at rest
    status: str = "active"
    created_at: float = 0.0


class OutboxStore(Protocol):
    async def active_webhooks(self, tenant_id: str) -> list[Webhook]: ...
    async def approver_emails(self, tenant_id: str) -> list[str]: ...
    async def webhook(self, webhook_id: str) -> Webhook | None: ...
    async def due(self, now: float, limit: int) -> list[Delivery]: ...
    async def claim(self, delivery: Delivery, until: float) -> bool: ...
    async def finish(self, delivery_id: str, fields: dict[str, Any]) -> None: ...


def planned(tenant_id: str, event_type: str, payload: dict[str, Any], webhooks: Sequence[Webhook],
            emails: Sequence[str], now: float) -> list[Delivery]:  # fmt: skip
    """One delivery per webhook of the tenant and per approver's address."""
    found = [Delivery(new_id("dlv"), tenant_id, "webhook", w.id, event_type, payload, now,
                      next_attempt_at=now) for w in webhooks]  # fmt: skip
    found += [Delivery(new_id("dlv"), tenant_id, "email", e, event_type, payload, now,
                       next_attempt_at=now) for e in emails]  # fmt: skip
    return found


def _allowed_networks(
    spec: str,
) -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    hosts, networks = set(), []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            hosts.add(item.lower())
    return hosts, networks


async def destination_allowed(url: str, allow: str) -> bool:
    """Client-supplied URLs never reach private, loopback or link-local addresses unless
    the host (or its network) is listed in `VALETKEY_FETCH_ALLOW_HOSTS`."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        return False
    hosts, networks = _allowed_networks(allow)
    if host in hosts:
        return True
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443)
    except OSError:
        return False
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if any(address in n for n in networks):
            continue
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or (address.is_reserved or address.is_multicast or address.is_unspecified)
        ):
            return False
    return True


@dataclass
class Dispatcher:
    """Delivers due notifications until stopped; a slow or failing target never blocks the
    others beyond its own timeout."""

    store: OutboxStore
    clock: Clock
    smtp_url: str
    smtp_from: str
    allow_hosts: str
    interval: float = 0.5
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as http:
            while not self._stop.is_set():
                try:
                    await self.deliver_due(http)
                except Exception:  # the next round tries again; never stop the server
                    log.exception("delivering notifications failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)

    def stop(self) -> None:
        self._stop.set()

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        now = self.clock.now()
        sent = 0
        for delivery in await self.store.due(now, 20):
            if not await self.store.claim(delivery, now + LEASE):
                continue  # another worker has it
            status, error = await self._send(http, delivery)
            attempts = delivery.attempts + 1
            if error is None:
                done = {"status": "delivered", "attempts": attempts, "last_status": status,
                        "last_error": None, "delivered_at": self.clock.now()}  # fmt: skip
                await self.store.finish(delivery.id, done)
                sent += 1
                continue
            final = attempts >= MAX_ATTEMPTS
            retry_at = self.clock.now() + BACKOFF[min(attempts - 1, len(BACKOFF) - 1)]
            await self.store.finish(delivery.id, {
                "status": "failed" if final else "pending", "attempts": attempts,
                "last_status": status, "last_error": error[:500], "next_attempt_at": retry_at,
            })  # fmt: skip
        return sent

    async def _send(
        self, http: httpx.AsyncClient, delivery: Delivery
    ) -> tuple[int | None, str | None]:
        if delivery.channel == "email":
            return await self._email(delivery)
        hook = await self.store.webhook(delivery.target)
        if hook is None or hook.status != "active":
            return None, "the webhook was removed"
        if not await destination_allowed(hook.url, self.allow_hosts):
            return None, "the webhook's address is private, loopback or link-local"
        body = orjson.dumps(delivery.payload)
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature(hook.secret, delivery.id, stamp, body),
        }
        try:
            response = await http.post(hook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{exc.__class__.__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    async def _email(self, delivery: Delivery) -> tuple[int | None, str | None]:
        if not self.smtp_url:
            return None, "no SMTP server is configured (VALETKEY_SMTP_URL)"
        parts = urlsplit(self.smtp_url)
        message = email_for(delivery.payload, self.smtp_from, delivery.target)
        try:
            await aiosmtplib.send(message, hostname=parts.hostname or "localhost",
                                  port=parts.port or 25, timeout=TIMEOUT,
                                  start_tls=False, use_tls=parts.scheme == "smtps")  # fmt: skip
        except (aiosmtplib.SMTPException, OSError) as exc:
            return None, f"{exc.__class__.__name__}: {exc}"
        return 250, None
