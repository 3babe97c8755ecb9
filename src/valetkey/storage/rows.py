"""Row -> model conversions shared by the stores."""

from typing import Any

from valetkey.identity.models import (
    Client,
    Resource,
    SecretRecord,
    Tenant,
    TenantSettings,
    User,
)


def tenant(row: Any) -> Tenant:
    return Tenant(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        settings=TenantSettings.from_json(row.settings),
        version=row.version,
    )


def user(row: Any) -> User:
    return User(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        roles=tuple(row.roles),
        status=row.status,
        created_at=row.created_at,
        signed_out_at=getattr(row, "signed_out_at", None) or 0.0,
    )


def resource(row: Any) -> Resource:
    return Resource(
        id=row.id,
        tenant_id=row.tenant_id,
        uri=row.uri,
        scopes=tuple(row.scopes),
        implies={k: tuple(v) for k, v in (row.implies or {}).items()},
        created_at=row.created_at,
    )


def client(row: Any) -> Client:
    return Client(
        id=row.id,
        tenant_id=row.tenant_id,
        kind=row.kind,
        name=row.name,
        status=row.status,
        secrets=tuple(SecretRecord.from_json(s) for s in row.secrets),
        jwks=row.jwks,
        scopes=tuple(row.scopes),
        rights=tuple(row.rights),
        sponsor_id=row.sponsor_id,
        address=row.address,
        description=row.description or "",
        needs_sponsor=bool(row.needs_sponsor),
        revoked_before=row.revoked_before or 0.0,
        created_at=row.created_at,
        updated_at=row.updated_at,
        redirect_uris=tuple(row.redirect_uris or ()),
        public=bool(row.public),
    )


def client_values(c: Client) -> dict[str, Any]:
    return {
        "id": c.id,
        "tenant_id": c.tenant_id,
        "kind": c.kind,
        "name": c.name,
        "status": c.status,
        "secrets": [s.to_json() for s in c.secrets],
        "jwks": c.jwks,
        "scopes": list(c.scopes),
        "rights": list(c.rights),
        "sponsor_id": c.sponsor_id,
        "address": c.address,
        "description": c.description,
        "needs_sponsor": c.needs_sponsor,
        "revoked_before": c.revoked_before,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "redirect_uris": list(c.redirect_uris) or None,
        "public": c.public,
    }
