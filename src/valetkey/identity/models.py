"""Identity records as plain frozen values; storage adapters build them, services read them."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

AgentStatus = Literal["active", "suspended", "decommissioned"]
ClientKind = Literal["agent", "service"]
ROLES = ("member", "approver", "admin")
RIGHTS = ("introspect", "pdp")
CLASSES = ("read", "write", "delete", "bulk", "send", "spend")  # every action has one
MAX_TOKEN_LIFETIME = 3600


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """Admin controls of one tenant; every field has a safe default."""

    token_lifetime: int | None = None  # None: the server's access_token_ttl
    max_token_lifetime: int = MAX_TOKEN_LIFETIME
    require_dpop: bool = False
    admin_only_scopes: tuple[str, ...] = ()  # only admins may delegate these
    blocked_scopes: tuple[str, ...] = ()  # refused everywhere, at once
    # Classes of request the user an agent acts for may approve themselves.
    self_approval_classes: tuple[str, ...] = ("write",)
    # Clients that register themselves (RFC 7591, client ID metadata documents) join the
    # default tenant as `pending` agents, unless it auto-approves them within a scope ceiling.
    default_tenant: bool = False
    auto_approve_clients: bool = False
    registration_scopes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "token_lifetime": self.token_lifetime,
            "max_token_lifetime": self.max_token_lifetime,
            "require_dpop": self.require_dpop,
            "admin_only_scopes": list(self.admin_only_scopes),
            "blocked_scopes": list(self.blocked_scopes),
            "self_approval_classes": list(self.self_approval_classes),
            "default_tenant": self.default_tenant,
            "auto_approve_clients": self.auto_approve_clients,
            "registration_scopes": list(self.registration_scopes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "TenantSettings":
        data = data or {}
        return cls(
            token_lifetime=data.get("token_lifetime"),
            max_token_lifetime=int(data.get("max_token_lifetime", MAX_TOKEN_LIFETIME)),
            require_dpop=bool(data.get("require_dpop", False)),
            admin_only_scopes=tuple(data.get("admin_only_scopes", ())),
            blocked_scopes=tuple(data.get("blocked_scopes", ())),
            self_approval_classes=tuple(data.get("self_approval_classes", ("write",))),
            default_tenant=bool(data.get("default_tenant", False)),
            auto_approve_clients=bool(data.get("auto_approve_clients", False)),
            registration_scopes=tuple(data.get("registration_scopes", ())),
        )

    def blocked(self, scopes: Iterable[str]) -> list[str]:
        return [s for s in scopes if s in self.blocked_scopes]

    def access_token_lifetime(self, server_default: int) -> int:
        wanted = self.token_lifetime or server_default
        return max(1, min(wanted, self.max_token_lifetime, MAX_TOKEN_LIFETIME))


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: float
    settings: TenantSettings = field(default_factory=TenantSettings)
    version: int = 1


@dataclass(frozen=True, slots=True)
class User:
    id: str
    tenant_id: str
    email: str
    roles: tuple[str, ...]
    status: Literal["active", "deactivated"]
    created_at: float
    signed_out_at: float = 0.0  # a session signed in before it is over (sign-out everywhere)


@dataclass(frozen=True, slots=True)
class Resource:
    """An audience (RFC 8707 resource indicator) and the scopes it accepts."""

    id: str
    tenant_id: str
    uri: str
    scopes: tuple[str, ...]
    implies: dict[str, tuple[str, ...]]
    created_at: float


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """A client secret by digest only; `expires_at` is set when a rotation retires it."""

    id: str
    digest: str
    created_at: float
    expires_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "digest": self.digest,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SecretRecord":
        return cls(data["id"], data["digest"], data["created_at"], data.get("expires_at"))


@dataclass(frozen=True, slots=True)
class Client:
    """An OAuth client: an agent identity, or a service client (resource server, gateway)."""

    id: str
    tenant_id: str
    kind: ClientKind
    name: str
    status: str
    secrets: tuple[SecretRecord, ...] = ()
    jwks: dict[str, Any] | None = None
    scopes: tuple[str, ...] = ()
    rights: tuple[str, ...] = ()
    sponsor_id: str | None = None
    address: str | None = None
    description: str = ""
    needs_sponsor: bool = False
    revoked_before: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    redirect_uris: tuple[str, ...] = ()
    public: bool = False  # no credential of its own (RFC 7591 "none"): code + PKCE only

    @property
    def is_agent(self) -> bool:
        return self.kind == "agent"

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def token_generation(self) -> str:
        """Changes whenever the agent is suspended or decommissioned; tokens carry it in
        their `jti`, so every token from before the change stays dead, even after a resume."""
        return format(int(self.revoked_before * 1_000_000), "x")

    def live_secrets(self, now: float) -> list[SecretRecord]:
        return [s for s in self.secrets if s.expires_at is None or s.expires_at > now]


def valid_resource_uri(uri: str) -> bool:
    """RFC 8707 §2: an absolute URI without a fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return bool(parts.scheme) and bool(parts.netloc or parts.path) and "#" not in uri


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """A company IdP whose signed assertions identify this tenant's users."""

    id: str
    tenant_id: str
    issuer: str
    jwks_uri: str
    audience: str | None
    claim: str
    created_at: float
    login_client_id: str | None = None  # set: people may sign in to the console through it
    login_label: str | None = None


@dataclass(frozen=True, slots=True)
class Delegation:
    """A user's grant to one agent: what it may do for them, and until when."""

    id: str
    tenant_id: str
    user_id: str
    agent_id: str
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    status: Literal["active", "revoked"]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    mandate: dict[str, Any] | None = None  # a template the task mandates must stay within
    sub_agents: tuple[str, ...] = ()  # agents this one may pass the work on to (chains)

    def live(self, now: float) -> bool:
        return self.status == "active" and (self.expires_at is None or self.expires_at > now)

    def reaches(self, audience: str) -> bool:
        """A delegation without resources reaches every resource of the tenant."""
        return not self.resources or audience in self.resources
