"""Connections: the vault's entries. One set of platform tokens per (tenant, provider,
owner), where the owner is a user (the agent acts for them; the platform enforces their
permissions) or an agent (its own account). Tokens exist only encrypted at rest and are
never shown: a connection's view (DESIGN.md) is `{id, provider, owner, status,
expires_at, scopes}`."""

from dataclasses import dataclass
from typing import Any, Literal

from valetkey.clock import iso

Status = Literal["active", "needs_reauth", "revoked"]


@dataclass(frozen=True, slots=True)
class PlatformTokens:
    """What the platform issued. Lives decrypted only in memory, for one call."""

    refresh_token: str | None
    access_token: str | None = None
    token_type: str = "Bearer"
    api_base: str | None = None  # the platform's per-connection API base, when it has one

    def to_json(self) -> dict[str, Any]:
        return {"refresh_token": self.refresh_token, "access_token": self.access_token,
                "token_type": self.token_type, "api_base": self.api_base}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PlatformTokens":
        return cls(data.get("refresh_token"), data.get("access_token"),
                   data.get("token_type") or "Bearer", data.get("api_base"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Connection:
    id: str
    tenant_id: str
    provider_id: str
    provider: str  # its name
    owner_kind: Literal["user", "agent"]
    owner_id: str
    status: Status
    scopes: tuple[str, ...]
    expires_at: float | None
    version: int
    created_at: float
    updated_at: float

    def view(self, owner: str) -> dict[str, Any]:
        return {"id": self.id, "provider": self.provider, "owner": owner,
                "owner_kind": self.owner_kind, "status": self.status,
                "expires_at": iso(self.expires_at) if self.expires_at else None,
                "scopes": list(self.scopes)}  # fmt: skip
