"""Webhooks as an admin manages them, and the delivery log."""

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.errors import InvalidInput
from valetkey.identity.service import IdentityService
from valetkey.ids import new_id
from valetkey.notify.messages import new_secret
from valetkey.notify.outbox import Delivery, Webhook


class WebhookStore(Protocol):
    async def add_webhook(self, hook: Webhook, events: Sequence[AuditEvent]) -> Webhook: ...
    async def list_webhooks(self, tenant_id: str) -> list[Webhook]: ...
    async def list_deliveries(self, tenant_id: str, limit: int = 200) -> list[Delivery]: ...


class Notifications:
    def __init__(self, identity: IdentityService, store: WebhookStore, clock: Clock, cid: str):
        self._identity = identity
        self._store = store
        self._clock = clock
        self._cid = cid

    async def add_webhook(self, tenant_ref: str, url: str) -> Webhook:
        """A new webhook with its signing secret (shown once, stored encrypted)."""
        tenant = await self._identity.tenant(tenant_ref)
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
            raise InvalidInput("a webhook URL is an absolute http(s) URL without a fragment")
        if parts.username or parts.password or len(url) > 2048:
            raise InvalidInput("a webhook URL carries no credentials and is at most 2048 long")
        hook = Webhook(new_id("whk"), tenant.id, url, new_secret(), "active", self._clock.now())
        event = AuditEvent("webhook.added", tenant.id, self._clock.now(), self._cid,
                           data={"webhook_id": hook.id, "url": url})  # fmt: skip
        return await self._store.add_webhook(hook, [event])

    async def list_webhooks(self, tenant_ref: str) -> list[Webhook]:
        return await self._store.list_webhooks((await self._identity.tenant(tenant_ref)).id)

    async def deliveries(self, tenant_ref: str) -> list[Delivery]:
        return await self._store.list_deliveries((await self._identity.tenant(tenant_ref)).id)
