"""JSON shapes of the public surface. Keep names stable: scripts and tests rely on them."""

from typing import Any

from valetkey.audit.events import StoredEvent
from valetkey.clock import iso
from valetkey.identity.models import Client, Delegation, Resource, Tenant, TrustedIssuer, User


def tenant(t: Tenant, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": t.id, "name": t.name}
    if full:
        out["settings"] = t.settings.to_json()
        out["created_at"] = iso(t.created_at)
    return out


def user(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "email": u.email,
        "tenant": u.tenant_id,
        "roles": list(u.roles),
        "status": u.status,
    }


def resource(r: Resource) -> dict[str, Any]:
    return {
        "id": r.id,
        "uri": r.uri,
        "tenant": r.tenant_id,
        "scopes": list(r.scopes),
        "implies": {k: list(v) for k, v in r.implies.items()},
    }


def agent(a: Client, sponsor_email: str | None, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": a.id,
        "client_id": a.id,
        "name": a.name,
        "tenant": a.tenant_id,
        "address": a.address,
        "status": a.status,
        "sponsor": sponsor_email,
        "needs_sponsor": a.needs_sponsor,
        "scopes": list(a.scopes),
        "redirect_uris": list(a.redirect_uris),
        "description": a.description,
        "credentials": credentials(a),
        "created_at": iso(a.created_at),
    }
    if secret is not None:
        out["client_secret"] = secret
    return out


def credentials(c: Client) -> dict[str, Any]:
    """Metadata only: ids and times, never a secret or a digest."""
    return {
        "secrets": [
            {
                "id": s.id,
                "created_at": iso(s.created_at),
                "expires_at": iso(s.expires_at) if s.expires_at else None,
            }
            for s in c.secrets
        ],
        "keys": [k.get("kid") for k in (c.jwks or {}).get("keys", [])],
    }


def service_client(c: Client, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id,
        "client_id": c.id,
        "name": c.name,
        "tenant": c.tenant_id,
        "rights": list(c.rights),
        "redirect_uris": list(c.redirect_uris),
        "status": c.status,
    }
    if secret is not None:
        out["client_secret"] = secret
    return out


def event(e: StoredEvent) -> dict[str, Any]:
    return e.to_json()


def issuer(i: TrustedIssuer) -> dict[str, Any]:
    return {
        "id": i.id,
        "tenant": i.tenant_id,
        "issuer": i.issuer,
        "jwks_uri": i.jwks_uri,
        "audience": i.audience,
        "claim": i.claim,
        "console_login": {"client_id": i.login_client_id, "label": i.login_label}
        if i.login_client_id
        else None,
    }


def delegation(d: Delegation, email: str | None = None) -> dict[str, Any]:
    return {
        "id": d.id,
        "tenant": d.tenant_id,
        "user": email,
        "user_id": d.user_id,
        "agent": d.agent_id,
        "scopes": list(d.scopes),
        "resources": list(d.resources),
        "mandate": d.mandate,
        "sub_agents": list(d.sub_agents),
        "status": d.status,
        "created_at": iso(d.created_at),
        "expires_at": iso(d.expires_at) if d.expires_at else None,
        "revoked_at": iso(d.revoked_at) if d.revoked_at else None,
    }
