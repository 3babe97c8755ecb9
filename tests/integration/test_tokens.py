"""Tokens obtained with authlib's OAuth 2 client, verified with PyJWT against /jwks.

authlib (the client), PyJWT (the verifier) and ValetKey (joserfc) share no JOSE code, so a
token that passes here is a standard RFC 9068 JWT, not one that only ValetKey understands.
"""

import json
import time
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    KeyPair,
    access_token,
    b64url,
    http,
    jwks,
    make_tenant,
    token_request,
    verify,
    write_key_file,
)
from tests.support.server import RunningServer

with warnings.catch_warnings():
    # authlib >= 1.9 prefers the `httpx2` package and warns when it falls back to httpx.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


@pytest.fixture(scope="module")
def shared(server: RunningServer) -> TenantSetup:
    """A tenant for the tests that change nothing another test relies on."""
    return make_tenant(server)


def fetch_with_authlib(
    tenant: TenantSetup, method: str, tmp_path: Path, **params: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(agent, token response) for a fresh agent authenticating with `method`."""
    server = tenant.server
    endpoint = server.base_url + "/oauth/token"
    if method == "private_key_jwt":
        key = KeyPair.generate()
        agent = tenant.new_agent(
            "pkjwt-bot",
            "deals:read",
            extra=("--public-key", str(write_key_file(tmp_path, "pem", key))),
        )
        client = OAuth2Client(
            agent["client_id"],
            ECKey.import_key(key.private_pem),
            token_endpoint_auth_method="private_key_jwt",
        )
        client.register_client_auth_method(PrivateKeyJWT(endpoint, alg="ES256"))
    else:
        agent = tenant.new_agent(f"{method.replace('_', '-')}-bot", "deals:read")
        client = OAuth2Client(
            agent["client_id"], agent["client_secret"], token_endpoint_auth_method=method
        )
    with client:
        token = client.fetch_token(endpoint, grant_type="client_credentials", **params)
    return agent, dict(token)


@pytest.mark.parametrize("method", METHODS)
def test_authlib_token_verifies_with_pyjwt(
    shared: TenantSetup, tmp_path: Path, method: str
) -> None:
    server = shared.server
    before = int(time.time())
    agent, token = fetch_with_authlib(shared, method, tmp_path, resource=shared.crm)
    after = int(time.time())

    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 900
    assert token["scope"] == "deals:read"
    assert "refresh_token" not in token

    header = jwt.get_unverified_header(token["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"] in {k["kid"] for k in jwks(server)["keys"]}

    claims = verify(server, token["access_token"], shared.crm)
    assert claims["iss"] == server.issuer
    assert claims["sub"] == agent["id"] == agent["client_id"]
    assert claims["client_id"] == agent["id"]
    assert claims["aud"] == shared.crm
    assert claims["scope"] == "deals:read"
    assert claims["tenant"] == shared.tenant["id"]
    assert before <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == 900
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16
    assert "act" not in claims
    assert set(claims) == {"iss", "sub", "aud", "client_id", "scope", "tenant", "iat", "exp", "jti"}


def test_token_response_headers_and_shape(shared: TenantSetup) -> None:
    response = token_request(shared.server, shared.agent, shared.crm)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}


def test_every_token_has_its_own_jti(shared: TenantSetup) -> None:
    tokens = [access_token(shared) for _ in range(5)]
    jtis = {verify(shared.server, t, shared.crm)["jti"] for t in tokens}
    assert len(jtis) == 5


def test_pyjwt_refuses_the_token_for_another_audience(shared: TenantSetup) -> None:
    token = access_token(shared)
    with pytest.raises(jwt.InvalidAudienceError):
        verify(shared.server, token, "https://mail.example")


def test_tampered_token_fails_pyjwt_verification(shared: TenantSetup) -> None:
    token = access_token(shared)
    head, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["scope"] = "deals:admin"
    forged_payload = b64url(json.dumps(claims).encode())
    with pytest.raises(jwt.InvalidSignatureError):
        verify(shared.server, f"{head}.{forged_payload}.{signature}", shared.crm)


def test_scope_parameter_narrows_and_implied_scopes_are_grantable(shared: TenantSetup) -> None:
    admin = shared.new_agent("crm-admin-bot", "deals:admin")
    server = shared.server
    # deals:admin ⊃ deals:write ⊃ deals:read: a lower scope may be requested alone
    for scope in ("deals:read", "deals:write", "deals:read deals:write", "deals:admin"):
        response = token_request(server, admin, shared.crm, scope=scope)
        assert response.status_code == 200, (scope, response.text)
        assert response.json()["scope"] == scope
        assert verify(server, response.json()["access_token"], shared.crm)["scope"] == scope


def test_without_resource_the_audience_is_the_resource_owning_the_scopes(
    shared: TenantSetup,
) -> None:
    response = token_request(shared.server, shared.agent)
    assert response.status_code == 200, response.text
    assert verify(shared.server, response.json()["access_token"], shared.crm)["aud"] == shared.crm


def test_resource_created_after_first_token_is_usable_at_once(shared: TenantSetup) -> None:
    server = shared.server
    access_token(shared)  # the server now knows this tenant's resources
    mail = f"https://mail-{shared.name}.example"
    server.cli("resources", "create", mail, "--tenant", shared.name, "--scope", "mail:read")
    agent = shared.new_agent("mail-bot", "mail:read")
    response = token_request(server, agent, mail)
    assert response.status_code == 200, response.text
    assert verify(server, response.json()["access_token"], mail)["scope"] == "mail:read"


def test_tenant_token_lifetime_settings(tenant: TenantSetup) -> None:
    server = tenant.server
    server.cli("tenants", "set", tenant.name, "--token-lifetime", "10m")
    response = token_request(server, tenant.agent, tenant.crm)
    assert response.json()["expires_in"] == 600
    claims = verify(server, response.json()["access_token"], tenant.crm)
    assert claims["exp"] - claims["iat"] == 600

    server.cli("tenants", "set", tenant.name, "--max-token-lifetime", "5m")
    response = token_request(server, tenant.agent, tenant.crm)
    claims = verify(server, response.json()["access_token"], tenant.crm)
    assert response.json()["expires_in"] == 300
    assert claims["exp"] - claims["iat"] == 300


def test_tenant_lifetime_cannot_exceed_sixty_minutes(tenant: TenantSetup) -> None:
    result = tenant.server.cli_raw("tenants", "set", tenant.name, "--max-token-lifetime", "61m")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    response = token_request(tenant.server, tenant.agent, tenant.crm)
    assert response.json()["expires_in"] == 900


def test_metadata_issuer_and_endpoints(server: Any) -> None:
    response = http.get(server.base_url + "/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    meta = response.json()
    assert meta["issuer"] == server.issuer == server.env["VALETKEY_ISSUER"]
    assert meta["token_endpoint"] == server.issuer + "/oauth/token"
    assert meta["jwks_uri"] == server.issuer + "/jwks"
    assert meta["introspection_endpoint"] == server.issuer + "/oauth/introspect"
    assert meta["revocation_endpoint"] == server.issuer + "/oauth/revoke"
    assert "client_credentials" in meta["grant_types_supported"]
    assert not {"password", "implicit"} & set(meta["grant_types_supported"])
    # "none": public clients registered at /oauth/register (code + PKCE only)
    assert set(meta["token_endpoint_auth_methods_supported"]) == {*METHODS, "none"}
    algs = set(meta["token_endpoint_auth_signing_alg_values_supported"])
    assert "none" not in algs
    assert not {a for a in algs if a.startswith("HS")}


def test_jwks_holds_public_keys_only(server: Any) -> None:
    response = http.get(server.base_url + "/jwks")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key), key
        assert key["kid"]
        assert key["use"] == "sig"
        assert key["alg"] in ("ES256", "EdDSA")
        assert jwt.PyJWK(key).key is not None  # each one loads as a public key in PyJWT
    assert len({k["kid"] for k in keys}) == len(keys)
