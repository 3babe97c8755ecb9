"""private_key_jwt (RFC 7523 §2.2 / §3): agents authenticate with their own key pair.

Assertions are built with PyJWT (or by hand, for the malicious ones); the server verifies
them with joserfc against the keys registered by `agents create --public-key`.
"""

import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    KeyPair,
    assert_oauth_error,
    assertion_claims,
    assertion_form,
    b64url,
    cli_error,
    introspection,
    make_tenant,
    post,
    unsigned_jwt,
    verify,
    write_key_file,
)
from tests.support.server import RunningServer


def key_agent(
    tenant: TenantSetup, tmp_path: Path, kind: str = "pem", name: str = "signer-bot"
) -> tuple[dict[str, Any], KeyPair]:
    key = KeyPair.generate()
    path = write_key_file(tmp_path, kind, key)
    agent = tenant.new_agent(name, "deals:read", extra=("--public-key", str(path)))
    return agent, key


def assert_token(tenant: TenantSetup, form: dict[str, str], agent: dict[str, Any]) -> str:
    response = post(tenant.server, "/oauth/token", {"resource": tenant.crm, **form})
    assert response.status_code == 200, response.text
    token = str(response.json()["access_token"])
    claims = verify(tenant.server, token, tenant.crm)
    assert claims["sub"] == claims["client_id"] == agent["id"]
    return token


def refused(tenant: TenantSetup, form: dict[str, str]) -> dict[str, Any]:
    response = post(tenant.server, "/oauth/token", {"resource": tenant.crm, **form})
    return assert_oauth_error(response, 401, "invalid_client")


@pytest.fixture
def signer(tenant: TenantSetup, tmp_path: Path) -> tuple[dict[str, Any], KeyPair]:
    return key_agent(tenant, tmp_path)


@pytest.fixture(scope="module")
def shared(server: RunningServer) -> TenantSetup:
    """A tenant for the tests that leave the agent as they found it."""
    return make_tenant(server)


@pytest.fixture(scope="module")
def shared_signer(
    shared: TenantSetup, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], KeyPair]:
    return key_agent(shared, tmp_path_factory.mktemp("keys"))


# registration ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pem", "jwk", "jwks"])
def test_agent_with_public_key_gets_tokens(tenant: TenantSetup, tmp_path: Path, kind: str) -> None:
    agent, key = key_agent(tenant, tmp_path, kind)
    assert "client_secret" not in agent
    assert agent["status"] == "active"
    assert agent["address"] == f"signer-bot@{tenant.name}.agents"
    shown = tenant.server.cli("agents", "show", agent["id"])
    assert shown["credentials"]["secrets"] == []
    kids = shown["credentials"]["keys"]
    assert len(kids) == 1
    if kind == "jwks":
        assert kids == ["agent-key-1"]

    server = tenant.server
    # without client_id (the assertion's iss names the client), with it, and with a kid
    assert_token(tenant, assertion_form(key.sign(assertion_claims(server, agent["id"]))), agent)
    form = assertion_form(key.sign(assertion_claims(server, agent["id"])), agent["id"])
    assert_token(tenant, form, agent)
    signed = key.sign(assertion_claims(server, agent["id"]), headers={"kid": kids[0]})
    assert_token(tenant, assertion_form(signed), agent)


@pytest.mark.parametrize(
    "aud",
    [["{issuer}"], ["{issuer}/oauth/token"], ["https://other.example", "{issuer}/oauth/token"]],
    ids=["issuer", "token-endpoint", "list"],
)
def test_assertion_audiences_accepted(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair], aud: list[str]
) -> None:
    agent, key = shared_signer
    value: Any = [a.format(issuer=shared.server.issuer) for a in aud]
    if len(value) == 1:
        value = value[0]
    claims = assertion_claims(shared.server, agent["id"], aud=value)
    assert_token(shared, assertion_form(key.sign(claims)), agent)


def test_secret_auth_is_refused_for_a_key_only_agent(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, _ = shared_signer
    for secret in ("", "vk_cs_guess"):
        response = post(
            shared.server,
            "/oauth/token",
            {"grant_type": "client_credentials", "resource": shared.crm},
            auth=(agent["id"], secret),
        )
        assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


# RFC 7523 §3 checks -----------------------------------------------------------------------
def test_jti_replay_is_refused(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, key = shared_signer
    assertion = key.sign(assertion_claims(shared.server, agent["id"]))
    assert_token(shared, assertion_form(assertion), agent)
    refused(shared, assertion_form(assertion))
    # a new assertion reusing the jti is a replay too
    claims = jwt.decode(assertion, options={"verify_signature": False})
    again = key.sign({**claims, "iat": claims["iat"] + 1})
    refused(shared, assertion_form(again))
    # and a fresh jti works
    assert_token(
        shared, assertion_form(key.sign(assertion_claims(shared.server, agent["id"]))), agent
    )


def test_concurrent_replay_lets_exactly_one_through(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair]
) -> None:
    """Single use is decided in the database, not in one process's memory."""
    agent, key = shared_signer
    form = {
        "resource": shared.crm,
        **assertion_form(key.sign(assertion_claims(shared.server, agent["id"]))),
    }
    url = shared.server.base_url + "/oauth/token"
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda _: httpx.post(url, data=form).status_code, range(8)))
    assert codes == [200] + [401] * 7


def test_assertion_cannot_be_replayed_at_another_endpoint(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, key = shared_signer
    assertion = key.sign(assertion_claims(shared.server, agent["id"]))
    token = assert_token(shared, assertion_form(assertion), agent)
    response = post(shared.server, "/oauth/revoke", {"token": token, **assertion_form(assertion)})
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": None},
        {"exp": "soon"},
        {"exp": -60},  # relative: expired a minute ago (beyond the leeway)
        {"exp": 7200},  # relative: lives two hours
        {"jti": None},
        {"jti": ""},
        {"jti": 12345},
        {"iat": 600},  # relative: issued in the future
        {"nbf": 600},
        {"aud": None},
        {"aud": "https://evil.example/oauth/token"},
        {"aud": "{issuer}/oauth/introspect"},
        {"aud": "{issuer}/"},
        {"aud": ["https://evil.example"]},
        {"iss": None},
        {"sub": None},
        {"sub": "agt_someoneelse"},
        {"iss": "agt_someoneelse"},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_bad_assertion_claims_are_invalid_client(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair], overrides: dict[str, Any]
) -> None:
    agent, key = shared_signer
    now = int(time.time())
    values: dict[str, Any] = {}
    for name, value in overrides.items():
        if name in ("exp", "iat", "nbf") and isinstance(value, int):
            value = now + value
        if isinstance(value, str):
            value = value.format(issuer=shared.server.issuer)
        values[name] = value
    claims = assertion_claims(shared.server, agent["id"], **values)
    for name in [n for n, v in values.items() if v is None]:
        claims.pop(name, None)
    # name the client explicitly: the assertion's own iss may be missing or wrong on purpose
    refused(shared, assertion_form(key.sign(claims), agent["id"]))


def test_iss_differs_from_sub_without_client_id(
    tenant: TenantSetup, tmp_path: Path, signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, key = signer
    other = tenant.new_agent("other-bot", "deals:read")
    claims = assertion_claims(tenant.server, agent["id"], sub=other["id"])
    refused(tenant, assertion_form(key.sign(claims)))
    claims = assertion_claims(tenant.server, other["id"], sub=agent["id"])
    refused(tenant, assertion_form(key.sign(claims)))


# algorithms and keys ------------------------------------------------------------------------
def test_alg_none_is_refused(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, _ = shared_signer
    claims = assertion_claims(shared.server, agent["id"])
    for alg in ("none", "None", "NONE"):
        token = unsigned_jwt({"alg": alg, "typ": "JWT"}, claims)
        refused(shared, assertion_form(token))
        refused(shared, assertion_form(token, agent["id"]))


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


@pytest.mark.parametrize("kind", ["pem", "jwk"])
def test_hmac_signed_with_the_public_key_is_refused(
    tenant: TenantSetup, tmp_path: Path, kind: str
) -> None:
    agent, key = key_agent(tenant, tmp_path, kind)
    claims = assertion_claims(tenant.server, agent["id"])
    public = write_key_file(tmp_path, kind, key).read_bytes()
    for alg in ("HS256", "HS384", "HS512"):
        for secret in (public, public.strip(), key.public_pem):
            token = hs256(
                {"alg": alg, "typ": "JWT"}, {**claims, "jti": f"{alg}{len(secret)}"}, secret
            )
            refused(tenant, assertion_form(token))


def test_key_in_the_jwk_header_is_not_used(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, registered = shared_signer
    attacker = KeyPair.generate()
    kid = shared.server.cli("agents", "show", agent["id"])["credentials"]["keys"][0]
    claims = assertion_claims(shared.server, agent["id"])
    for headers in (
        {"jwk": attacker.public_jwk()},
        {"jwk": attacker.public_jwk(kid), "kid": kid},
        {"jwk": attacker.public_jwk("attacker"), "kid": "attacker"},
        {"jku": "https://attacker.example/jwks.json", "kid": kid},
        {"x5u": "https://attacker.example/cert.pem"},
    ):
        token = attacker.sign({**claims, "jti": json.dumps(headers)[:60]}, headers=headers)
        refused(shared, assertion_form(token))
    # the registered key still works, even if an (ignored) jwk header is present
    token = registered.sign(claims, headers={"jwk": attacker.public_jwk()})
    assert_token(shared, assertion_form(token), agent)


def test_another_agents_key_does_not_authenticate(tenant: TenantSetup, tmp_path: Path) -> None:
    alice, _ = key_agent(tenant, tmp_path, name="alice-bot")
    bob, bob_key = key_agent(tenant, tmp_path, name="bob-bot")
    claims = assertion_claims(tenant.server, alice["id"])
    refused(tenant, assertion_form(bob_key.sign(claims)))
    refused(tenant, assertion_form(bob_key.sign(claims), alice["id"]))
    # bob's assertion naming alice as client_id is refused as well
    refused(
        tenant,
        assertion_form(bob_key.sign(assertion_claims(tenant.server, bob["id"])), alice["id"]),
    )


def test_assertion_typed_as_access_token_is_refused(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, key = shared_signer
    claims = assertion_claims(shared.server, agent["id"])
    refused(shared, assertion_form(key.sign(claims, headers={"typ": "at+jwt"})))


def test_wrong_assertion_type(
    shared: TenantSetup, shared_signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, key = shared_signer
    form = assertion_form(key.sign(assertion_claims(shared.server, agent["id"])))
    form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    refused(shared, form)


def test_suspended_key_agent_is_refused_and_its_token_dies(
    tenant: TenantSetup, signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, key = signer
    token = assert_token(
        tenant, assertion_form(key.sign(assertion_claims(tenant.server, agent["id"]))), agent
    )
    tenant.server.cli("agents", "suspend", agent["id"])
    refused(tenant, assertion_form(key.sign(assertion_claims(tenant.server, agent["id"]))))
    assert introspection(tenant.server, tenant.introspector(), token) == {"active": False}


def test_key_agent_revokes_its_own_token(
    tenant: TenantSetup, signer: tuple[dict[str, Any], KeyPair]
) -> None:
    agent, key = signer
    server = tenant.server
    token = assert_token(
        tenant, assertion_form(key.sign(assertion_claims(server, agent["id"]))), agent
    )
    rs = tenant.introspector()
    assert introspection(server, rs, token)["active"] is True
    form = assertion_form(key.sign(assertion_claims(server, agent["id"])))
    del form["grant_type"]
    response = post(server, "/oauth/revoke", {"token": token, **form})
    assert response.status_code == 200, response.text
    assert introspection(server, rs, token) == {"active": False}


# the CLI refuses private keys ----------------------------------------------------------------
def private_key_files(tmp_path: Path) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization

    key = KeyPair.generate()
    files = {
        "pkcs8.pem": key.private_pem,
        "sec1.pem": key.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        "private.jwk": json.dumps(key.private_jwk()).encode(),
        "private.jwks": json.dumps({"keys": [key.public_jwk("a"), key.private_jwk()]}).encode(),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize("name", ["pkcs8.pem", "sec1.pem", "private.jwk", "private.jwks"])
def test_private_key_given_as_public_key_is_refused(
    shared: TenantSetup, tmp_path: Path, name: str
) -> None:
    path = private_key_files(tmp_path)[name]
    message = cli_error(
        shared.server,
        "agents", "create", "leaky-bot", "--tenant", shared.name,
        "--sponsor", "sam@acme.example", "--scope", "deals:read", "--public-key", str(path),
    )  # fmt: skip
    assert "private" in message.lower()
    names = [a["name"] for a in shared.server.cli("agents", "list", "--tenant", shared.name)]
    assert "leaky-bot" not in names


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key",
        b'{"kty": "oct", "k": "c2VjcmV0"}',
        b'{"keys": []}',
        b"{",
        b"[1, 2]",
        b"\xff\xfe\x00binary",
    ],
    ids=["empty", "text", "oct", "empty-jwks", "broken-json", "json-list", "binary"],
)
def test_garbage_public_key_file_is_refused(
    shared: TenantSetup, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    cli_error(
        shared.server,
        "agents", "create", "odd-bot", "--tenant", shared.name,
        "--sponsor", "sam@acme.example", "--scope", "deals:read", "--public-key", str(path),
    )  # fmt: skip
