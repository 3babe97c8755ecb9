"""Whose platform token an upstream gets, exactly as the HTTP gateway picks it: the
upstream's provider, and the connection of the user a delegated token acts for, else the
agent's own (`gateway.calls.owner_of`); never anyone else's, never another tenant's.

The token comes from the vault (`TokenVault.access`, single-flight refresh included) and
goes out as `Authorization: Bearer …` on every request to the upstream; after a 401 the
vault refreshes once and the request is sent once more. The agent's own ValetKey token
never leaves ValetKey."""

from collections.abc import AsyncGenerator
from typing import Any, Protocol

import httpx2

from valetkey.gateway.calls import owner_of
from valetkey.identity.models import Tenant
from valetkey.mcp.upstreams import Upstream
from valetkey.policy.decision import Caller
from valetkey.vault.connections import PlatformTokens
from valetkey.vault.platform import PlatformError
from valetkey.vault.providers import Provider
from valetkey.vault.refresh import ConnectionUnusable, Slot


class Refused(Exception):
    """ValetKey will not (or cannot) make this call: a tool error for the model, with a
    stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProviderFinder(Protocol):
    async def find(self, tenant: Tenant, name: str) -> Provider | None: ...


class ConnectionFinder(Protocol):
    async def find_for(
        self, tenant_id: str, provider_id: str, owner_kind: str, owner_id: str
    ) -> Slot | None: ...


class TokenSource(Protocol):
    async def access(
        self, connection_id: str, *, stale_version: int | None = None, cid: str = "",
        read: Slot | None = None,
    ) -> tuple[PlatformTokens, int]: ...  # fmt: skip


class Credential:
    """One caller's platform token for one upstream, for the length of one operation."""

    def __init__(self, slot: Slot, vault: TokenSource, cid: str) -> None:
        self.slot = slot
        self._vault = vault
        self._cid = cid
        self._current: tuple[str, int] | None = None
        self.failure: Refused | None = None  # a vault failure met inside the HTTP client

    @property
    def connection_id(self) -> str:
        return self.slot.connection.id

    async def token(self, stale_version: int | None = None) -> tuple[str, int]:
        """A usable access token and its version; `stale_version`: the upstream refused it."""
        if self._current is not None and stale_version is None:
            return self._current
        try:
            tokens, version = await self._vault.access(
                self.slot.connection.id, stale_version=stale_version, cid=self._cid,
                read=self.slot if self._current is None and stale_version is None else None,
            )  # fmt: skip
        except ConnectionUnusable as exc:
            self.failure = Refused(exc.code, str(exc))
            raise self.failure from exc
        except PlatformError as exc:
            self.failure = Refused(exc.code, f"refreshing the platform token failed: {exc}")
            raise self.failure from exc
        self._current = (tokens.access_token or "", version)
        return self._current

    def auth(self) -> httpx2.Auth:
        return _PlatformAuth(self)


class _PlatformAuth(httpx2.Auth):
    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token, version = await self._credential.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:  # the platform token went stale: refresh once
            token, _ = await self._credential.token(stale_version=version)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


async def credential_for(
    caller: Caller,
    upstream: Upstream,
    providers: ProviderFinder,
    connections: ConnectionFinder,
    vault: TokenSource,
    issuer: str,
    cid: str,
) -> Credential | None:
    """The caller's credential for the upstream (None: the upstream takes none), or Refused."""
    if upstream.provider is None:
        return None
    provider = await providers.find(caller.tenant, upstream.provider)
    if provider is None:
        raise Refused(
            "unknown_provider",
            f"the provider {upstream.provider!r} of the upstream {upstream.name!r} was removed",
        )
    kind, owner = owner_of(caller)
    slot = await connections.find_for(caller.tenant.id, provider.id, kind, owner)
    if slot is None:
        whose = "the user" if kind == "user" else "the agent"
        raise Refused(
            "connection_required",
            f"{whose} has not connected {provider.name}; connect it at "
            f"{issuer}/v1/connections/start?provider={provider.name}",
        )
    return Credential(slot, vault, cid)


def outbound_headers(caller: Caller, cid: str) -> dict[str, Any]:
    """What every request to an upstream carries besides the credential."""
    return {"X-Agent-Id": caller.agent.id, "X-Correlation-Id": cid}
