"""Providers as an admin manages them. Adding one also registers the gateway's audience
for it, `{issuer}/v1/gateway/{name}` (DESIGN.md), with `{name}:read|write|delete` scopes,
so agents ask for tokens to the gateway like to any resource."""

from collections.abc import Sequence
from typing import Any, Protocol

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.errors import InvalidInput
from valetkey.identity.service import IdentityService
from valetkey.ids import new_id
from valetkey.vault.providers import (
    Provider,
    ProviderError,
    load_preset,
    parse_config,
    valid_name,
)


class ProviderStore(Protocol):
    async def add(self, provider: Provider, secret: str, events: Sequence[AuditEvent]) -> None: ...
    async def find(self, tenant_id: str, name: str) -> Provider: ...
    async def list(self, tenant_id: str) -> list[Provider]: ...
    async def remove(self, provider: Provider, events: Sequence[AuditEvent]) -> None: ...


def gateway_audience(issuer: str, name: str) -> str:
    return f"{issuer}/v1/gateway/{name}"


class Providers:
    def __init__(
        self, identity: IdentityService, store: ProviderStore, clock: Clock, issuer: str, cid: str
    ) -> None:
        self._identity = identity
        self._store = store
        self._clock = clock
        self._issuer = issuer
        self._cid = cid

    async def add(
        self,
        tenant_ref: str,
        name: str,
        *,
        client_id: str,
        client_secret: str,
        preset: str | None = None,
        options: dict[str, Any] | None = None,
        placeholders: dict[str, str] | None = None,
        scopes: Sequence[str] = (),
    ) -> Provider:
        """A provider from a preset and/or explicit options (options win over the preset)."""
        tenant = await self._identity.tenant(tenant_ref)
        if not valid_name(name):
            raise InvalidInput("a provider name is lower case letters, digits and dashes")
        if not client_id or not client_secret.strip():
            raise InvalidInput("a provider needs its client id and client secret")
        try:
            data = {**(load_preset(preset) if preset else {}),
                    **{k: v for k, v in (options or {}).items() if v is not None}}  # fmt: skip
            config = parse_config(data, placeholders=placeholders)
        except ProviderError as exc:
            raise InvalidInput(str(exc)) from exc
        provider = Provider(new_id("prv"), tenant.id, name, config, client_id,
                            tuple(dict.fromkeys(scopes)), self._clock.now())  # fmt: skip
        audience = gateway_audience(self._issuer, name)
        await self._identity.create_resource(
            tenant.id, audience, [f"{name}:read", f"{name}:write", f"{name}:delete"]
        )
        event = AuditEvent("provider.added", tenant.id, self._clock.now(), self._cid,
                           data={"provider_id": provider.id, "name": name, "preset": preset,
                                 "api_base": config.api_base, "audience": audience})  # fmt: skip
        await self._store.add(provider, client_secret.strip(), [event])
        return provider

    async def list(self, tenant_ref: str) -> list[Provider]:
        return await self._store.list((await self._identity.tenant(tenant_ref)).id)

    async def show(self, tenant_ref: str, name: str) -> Provider:
        return await self._store.find((await self._identity.tenant(tenant_ref)).id, name)

    async def remove(self, tenant_ref: str, name: str) -> Provider:
        provider = await self.show(tenant_ref, name)
        event = AuditEvent("provider.removed", provider.tenant_id, self._clock.now(), self._cid,
                           data={"provider_id": provider.id, "name": name})  # fmt: skip
        await self._store.remove(provider, [event])
        return provider

    def view(self, provider: Provider) -> dict[str, Any]:
        """What `providers show` prints: never the client secret."""
        return {"id": provider.id, "name": provider.name, "tenant": provider.tenant_id,
                "client_id": provider.client_id, "scopes": list(provider.scopes),
                "audience": gateway_audience(self._issuer, provider.name),
                **provider.config.to_json()}  # fmt: skip
