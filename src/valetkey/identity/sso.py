"""Which trusted issuers may sign people in to the console, and with which OAuth client.
The issuer must already be trusted (`issuers add`); its users must already exist."""

from collections.abc import Sequence
from typing import Protocol

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.errors import InvalidInput, NotFound
from valetkey.identity.delegations import DelegationService
from valetkey.identity.models import TrustedIssuer


class SsoStore(Protocol):
    async def set_login(self, issuer_id: str, client_id: str, secret: str, label: str,
                        events: Sequence[AuditEvent]) -> None: ...  # fmt: skip
    async def login_secret(self, issuer_id: str) -> str: ...


class ConsoleLogin:
    def __init__(
        self, delegations: DelegationService, store: SsoStore, clock: Clock, correlation_id: str
    ) -> None:
        self._delegations = delegations
        self._store = store
        self._clock = clock
        self._cid = correlation_id

    async def enable(
        self, tenant_ref: str, issuer: str, client_id: str, secret: str, label: str | None
    ) -> TrustedIssuer:
        tenant = await self._delegations.identity.tenant(tenant_ref)
        found = next((i for i in await self._delegations.list_issuers(tenant.id)
                      if i.issuer == issuer), None)  # fmt: skip
        if found is None:
            raise NotFound(f"{issuer!r} is not a trusted issuer of this tenant (issuers add)")
        client_id, secret = client_id.strip(), secret.strip()
        if not client_id or len(client_id) > 255 or not secret:
            raise InvalidInput("a client id (at most 255 characters) and its secret are needed")
        name = (label or "").strip()[:80] or issuer.split("://", 1)[-1].split("/", 1)[0]
        event = AuditEvent(
            "issuer.login_enabled", tenant.id, self._clock.now(), self._cid,
            data={"issuer": issuer, "client_id": client_id},
        )  # fmt: skip
        await self._store.set_login(found.id, client_id, secret, name, [event])
        return next(i for i in await self._delegations.list_issuers(tenant.id) if i.id == found.id)

    async def issuers(self, tenant_id: str) -> list[TrustedIssuer]:
        """The issuers people of this tenant may sign in through."""
        listed = await self._delegations.list_issuers(tenant_id)
        return [i for i in listed if i.login_client_id]

    async def secret(self, issuer: TrustedIssuer) -> str:
        return await self._store.login_secret(issuer.id)
