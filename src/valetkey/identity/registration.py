"""Clients that register themselves (RFC 7591 dynamic registration; MCP clients).

A registered client becomes an agent identity of the default tenant (`tenants set T
--default-tenant`) with status `pending`: it can do nothing until an admin approves it
(`agents approve ID --sponsor EMAIL`), unless the tenant auto-approves registrations
within a scope ceiling (`--auto-approve-clients --registration-scope S…`). Open
registration is an invitation to abuse; a pending identity with no scope is not.
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from valetkey.errors import InvalidInput
from valetkey.identity import redirect_uris as redirect_uris_
from valetkey.identity.models import Client, Tenant

MAX_REDIRECT_URIS = 10
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")


class RegistrationError(ValueError):
    """RFC 7591 §3.2.2: `invalid_redirect_uri` or `invalid_client_metadata`."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """What a client may say about itself, checked."""

    name: str
    redirect_uris: tuple[str, ...]
    auth_method: str
    scopes: tuple[str, ...]
    client_uri: str | None = None

    @property
    def public(self) -> bool:
        return self.auth_method == "none"


def parse_metadata(data: Any) -> ClientMetadata:
    if not isinstance(data, dict):
        raise RegistrationError("invalid_client_metadata", "the body is a JSON object")
    uris = data.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > MAX_REDIRECT_URIS:
        raise RegistrationError(
            "invalid_redirect_uri", f"redirect_uris is a list of 1 to {MAX_REDIRECT_URIS} URIs"
        )
    try:
        checked = tuple(dict.fromkeys(redirect_uris_.validate(str(u)) for u in uris))
    except InvalidInput as exc:
        raise RegistrationError("invalid_redirect_uri", str(exc)) from exc
    grants = data.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not set(grants) <= {"authorization_code", "refresh_token"}:
        raise RegistrationError(
            "invalid_client_metadata", "grant_types may be authorization_code and refresh_token"
        )
    if data.get("response_types", ["code"]) != ["code"]:
        raise RegistrationError("invalid_client_metadata", 'response_types must be ["code"]')
    method = data.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in AUTH_METHODS:
        raise RegistrationError(
            "invalid_client_metadata",
            f"token_endpoint_auth_method is one of {', '.join(AUTH_METHODS)}",
        )
    name = data.get("client_name", "mcp-client")
    scope = data.get("scope", "")
    if not isinstance(name, str) or not isinstance(scope, str) or len(scope) > 2048:
        raise RegistrationError("invalid_client_metadata", "client_name and scope are strings")
    client_uri = data.get("client_uri")
    return ClientMetadata(
        name[:100],
        checked,
        method,
        tuple(dict.fromkeys(scope.split())),
        client_uri if isinstance(client_uri, str) else None,
    )


def agent_name(display: str) -> str:
    """A unique agent name from whatever the client calls itself."""
    slug = "".join(c if c.isalnum() else "-" for c in display.lower()).strip("-")
    slug = "-".join(p for p in slug.split("-") if p)[:40] or "client"
    return f"{slug}-{secrets.token_hex(3)}"


def granted_scopes(tenant: Tenant, asked: Sequence[str], declared: set[str]) -> tuple[str, ...]:
    """What a registration gets: what it asked for among the tenant's scopes — within the
    ceiling when it is approved on the spot."""
    known = [s for s in asked if s in declared]
    if tenant.settings.auto_approve_clients:
        ceiling = set(tenant.settings.registration_scopes)
        known = [s for s in known if s in ceiling] if asked else sorted(ceiling & declared)
    return tuple(known)


def registration_response(
    client: Client, secret: str | None, meta: ClientMetadata, issued_at: float
) -> dict[str, Any]:
    """RFC 7591 §3.2.1."""
    body: dict[str, Any] = {
        "client_id": client.id,
        "client_id_issued_at": int(issued_at),
        "client_name": meta.name,
        "redirect_uris": list(client.redirect_uris),
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": meta.auth_method,
        "scope": " ".join(client.scopes),
        "status": client.status,
    }
    if secret is not None:
        body.update(client_secret=secret, client_secret_expires_at=0)
    return body
