"""What a grant needs to know about one request, and the store methods the endpoints use."""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from valetkey.identity.models import Client, Resource, Tenant
from valetkey.oauth.client_auth import AssertionReplayGuard


@dataclass(frozen=True, slots=True)
class ClientContext:
    """The authenticated client, its tenant, and which signing key is active — one read."""

    client: Client
    tenant: Tenant
    active_kid: str | None


@dataclass(frozen=True, slots=True)
class RequestMeta:
    correlation_id: str
    authorization: str | None = None
    dpop: str | None = None  # the DPoP header; None when absent or sent more than once
    dpop_sent: bool = False  # a DPoP header came (possibly repeated, then `dpop` is None)
    response_headers: dict[str, str] = field(default_factory=dict)  # set by the endpoint


class OAuthStore(AssertionReplayGuard, Protocol):
    async def load_client_context(self, client_id: str) -> ClientContext | None: ...

    async def resources_for_tenant(self, tenant_id: str) -> list[Resource]: ...

    async def is_revoked(self, jti: str) -> bool: ...

    async def revoke_token(self, jti: str, tenant_id: str, expires_at: float, now: float) -> bool:
        """Record the revocation; False if it was already revoked."""
        ...


T = TypeVar("T")


class TenantCache:
    """A tenant's configuration (resources, role scopes, trusted issuers) kept per process
    and reloaded when the tenant's version moves. Every change to it bumps the version in
    the same transaction, and the version comes with the client in the one query each
    request makes, so a change is seen by the next request on every node."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[int, Any]] = {}

    async def get(self, tenant: Tenant, name: str, load: Callable[[], Awaitable[T]]) -> T:
        found = self._entries.get((tenant.id, name))
        if found is not None and found[0] == tenant.version:
            return found[1]  # type: ignore[no-any-return]
        value = await load()
        self._entries[(tenant.id, name)] = (tenant.version, value)
        return value


@dataclass(frozen=True, slots=True)
class TokenRequest:
    params: Mapping[str, str]
    resources_requested: tuple[str, ...]
    context: ClientContext
    tenant_resources: tuple[Resource, ...]
    now: float
    correlation_id: str = ""
    dpop_jkt: str | None = None  # the verified DPoP proof's key thumbprint, if one came
    cache: TenantCache = field(default_factory=TenantCache)
