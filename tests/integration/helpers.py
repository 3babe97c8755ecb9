"""Shared helpers for the integration tests: raw HTTP, an independent JWT verifier, keys.

Everything here talks to the running server over HTTP or through the real CLI; the only
imports from `valetkey` are in `server_signing_key` (to forge tokens with the server's own
key, e.g. already expired ones, which a test cannot wait 15 minutes for).
"""

import asyncio
import atexit
import base64
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import TenantSetup
from tests.support.server import RunningServer

GRANT = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def make_tenant(server: RunningServer) -> TenantSetup:
    """What the `tenant` fixture builds, for module-scoped fixtures of read-only tests."""
    name = "t-" + secrets.token_hex(4)
    t = server.cli("tenants", "create", name)
    sponsor = server.cli("users", "create", "sam@acme.example", "--tenant", name, "--role", "admin")
    crm = f"https://crm-{name}.example"
    resource = server.cli(
        "resources", "create", crm, "--tenant", name,
        "--scope", "deals:read", "--scope", "deals:write", "--scope", "deals:admin",
    )  # fmt: skip
    agent = server.cli(
        "agents", "create", "invoice-bot", "--tenant", name, "--sponsor", "sam@acme.example",
        "--scope", "deals:read",
    )  # fmt: skip
    return TenantSetup(server, t, sponsor, resource, agent)


_INTROSPECTORS: dict[str, dict[str, Any]] = {}


def introspector_of(tenant: TenantSetup) -> dict[str, Any]:
    """The tenant's `crm-api` service client with the introspect right, created once."""
    key = str(tenant.tenant["id"])
    if key not in _INTROSPECTORS:
        _INTROSPECTORS[key] = tenant.introspector()
    return _INTROSPECTORS[key]


# HTTP ----------------------------------------------------------------------------------------
# One client for the whole session: `httpx.post()` builds a client (and an SSL context) per
# call, which costs ~20 ms; the server under test is plain HTTP on 127.0.0.1.
http = httpx.Client(timeout=30)
atexit.register(http.close)


def post(
    server: RunningServer,
    path: str,
    data: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    content: bytes | str | None = None,
) -> httpx.Response:
    """POST a form (or raw content) to the server; never follows redirects."""
    extra: dict[str, Any] = {"headers": headers}
    if auth is not None:
        extra["auth"] = auth
    if isinstance(data, list):  # repeated names: encode by hand
        content, extra["headers"] = urlencode(data), {**FORM, **(headers or {})}
    if content is not None or isinstance(data, list):
        return http.post(server.base_url + path, content=content, **extra)
    return http.post(server.base_url + path, data=data, **extra)


def token_request(
    server: RunningServer,
    client: dict[str, Any],
    resource: str | None = None,
    *,
    scope: str | None = None,
    secret: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """client_credentials with client_secret_basic."""
    data = {"grant_type": GRANT}
    if resource is not None:
        data["resource"] = resource
    if scope is not None:
        data["scope"] = scope
    auth = (client["client_id"], secret or client["client_secret"])
    return post(server, "/oauth/token", data, auth=auth, headers=headers)


def access_token(tenant: TenantSetup, agent: dict[str, Any] | None = None, **kw: Any) -> str:
    response = token_request(tenant.server, agent or tenant.agent, tenant.crm, **kw)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def introspect(
    server: RunningServer, caller: dict[str, Any], token: str, **extra: str
) -> httpx.Response:
    return post(
        server,
        "/oauth/introspect",
        {"token": token, **extra},
        auth=(caller["client_id"], caller["client_secret"]),
    )


def introspection(server: RunningServer, caller: dict[str, Any], token: str) -> dict[str, Any]:
    response = introspect(server, caller, token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


def revoke(server: RunningServer, caller: dict[str, Any], token: str) -> httpx.Response:
    return post(
        server,
        "/oauth/revoke",
        {"token": token},
        auth=(caller["client_id"], caller["client_secret"]),
    )


def assert_oauth_error(
    response: httpx.Response, status: int, error: str, *, basic_challenge: bool | None = None
) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: exact status and code, JSON, not cacheable."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}, body
    assert response.headers.get("cache-control") == "no-store"
    if basic_challenge is True:
        assert response.headers.get("www-authenticate", "").lower().startswith("basic"), (
            response.headers
        )
    elif basic_challenge is False:
        assert "www-authenticate" not in response.headers
    return dict(body)


# verification with PyJWT against /jwks --------------------------------------------------
def verify(server: RunningServer, token: str, audience: str) -> dict[str, Any]:
    """Verify like a resource server would, with PyJWT and a fresh JWKS fetch."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    key = jwt.PyJWKClient(server.base_url + "/jwks", cache_keys=False).get_signing_key(
        header["kid"]
    )
    return dict(
        jwt.decode(
            token,
            key,
            algorithms=["ES256", "EdDSA"],
            audience=audience,
            issuer=server.issuer,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
        )
    )


def jwks(server: RunningServer) -> dict[str, Any]:
    response = http.get(server.base_url + "/jwks")
    assert response.status_code == 200
    return dict(response.json())


# the CLI ---------------------------------------------------------------------------------
def audit_events(server: RunningServer, *args: str) -> list[dict[str, Any]]:
    return list(server.cli("audit", "search", *args, "--limit", "10000"))


def cli_error(server: RunningServer, *args: str) -> str:
    """Run a command that must fail: non-zero exit, one line of error, no traceback."""
    result = server.cli_raw(*args)
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error:"), result.output
    assert len(message.splitlines()) == 1, message
    return str(message)


# keys for private_key_jwt ----------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class KeyPair:
    private: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> "KeyPair":
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self, kid: str | None = None) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
        if kid:
            jwk["kid"] = kid
        return jwk

    def private_jwk(self) -> dict[str, Any]:
        d = self.private.private_numbers().private_value.to_bytes(32, "big")
        return {**self.public_jwk(), "d": b64url(d)}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm="ES256", headers=headers)


def write_key_file(directory: Path, kind: str, key: KeyPair) -> Path:
    """The agent's public key as a PEM, a JWK or a JWKS file."""
    if kind == "pem":
        path, text = directory / "agent.pub.pem", key.public_pem.decode()
    elif kind == "jwk":
        path, text = directory / "agent.jwk.json", json.dumps(key.public_jwk())
    else:
        path, text = (
            directory / "agent.jwks.json",
            json.dumps({"keys": [key.public_jwk("agent-key-1")]}),
        )
    path.write_text(text)
    return path


def assertion_claims(server: RunningServer, client_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": server.base_url + "/oauth/token",
        "iat": now,
        "exp": now + 120,
        "jti": secrets.token_urlsafe(16),
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def assertion_form(assertion: str, client_id: str | None = None, **extra: str) -> dict[str, str]:
    form = {
        "grant_type": GRANT,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **extra,
    }
    if client_id is not None:
        form["client_id"] = client_id
    return form


def unsigned_jwt(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(signature),
        ]
    )


# the server's own signing key, to forge tokens a test cannot wait for ---------------------
def server_signing_key(server: RunningServer) -> tuple[str, bytes]:
    """(kid, private PEM) of the server's active signing key, read as an operator could."""
    from valetkey.config import Settings
    from valetkey.runtime import Runtime

    async def load() -> tuple[str, bytes]:
        settings = Settings(
            data_dir=Path(server.env["VALETKEY_DATA_DIR"]),
            database_url=server.env["VALETKEY_DATABASE_URL"],
            issuer=server.env["VALETKEY_ISSUER"],
        )
        rt = await Runtime.open(settings, migrate=False)
        try:
            kid, _alg, key = await rt.keys.signer(None)
            return kid, key.as_pem(private=True)
        finally:
            await rt.close()

    return asyncio.run(load())


CRM_ACTIONS = {"crm:deals.read": ("read", "deals:read"),
               "crm:deals.delete": ("delete", "deals:write")}  # fmt: skip


def add_crm_actions(tenant: TenantSetup, *names: str) -> None:
    """Register the CRM's deal actions (all, or those named) with their class and scope."""
    for name in names or tuple(CRM_ACTIONS):
        klass, scope = CRM_ACTIONS[name]
        tenant.server.cli("actions", "add", name, "--tenant", tenant.name, "--class", klass,
                          "--scope", scope)  # fmt: skip
