"""What a grant needs to know about one request, and the store methods the endpoints use."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

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


@dataclass(frozen=True, slots=True)
class TokenRequest:
    params: Mapping[str, str]
    resources_requested: tuple[str, ...]
    context: ClientContext
    tenant_resources: tuple[Resource, ...]
    now: float
    correlation_id: str = ""
    dpop_jkt: str | None = None  # the verified DPoP proof's key thumbprint, if one came
