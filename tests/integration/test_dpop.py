"""DPoP (RFC 9449) at the token endpoint: server nonces, every proof check, bound tokens
(`cnf.jkt`, `token_type: DPoP`) for client_credentials and token exchange, and the tenant's
require-DPoP setting. Proofs are built by an independent client (PyJWT, `tests.support.dpop`).
"""

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    assert_oauth_error,
    introspection,
    introspector_of,
    make_tenant,
    unsigned_jwt,
    verify,
)
from tests.support.dpop import TOKEN_PATH, DPoPClient, ProofKey, jwk_thumbprint, send
from tests.support.idp import FakeIdP, running_idp
from tests.support.server import RunningServer

CC = {"grant_type": "client_credentials"}
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def _auth(agent: dict[str, Any]) -> tuple[str, str]:
    return agent["client_id"], agent["client_secret"]


def _form(tenant: TenantSetup) -> dict[str, str]:
    return {**CC, "resource": tenant.crm}


def _bound(response: httpx.Response, client: DPoPClient) -> str:
    """A 200 with a DPoP-bound token and a nonce for the next proof; the token."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP", body
    assert response.headers.get("DPoP-Nonce"), response.headers
    client.nonce = response.headers["DPoP-Nonce"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": client.key.thumbprint}, claims
    return str(body["access_token"])


@pytest.fixture(scope="module")
def shared(server: RunningServer) -> TenantSetup:
    """A tenant for the tests that only ask for tokens (one per backend)."""
    return make_tenant(server)


@pytest.fixture
def client(shared: TenantSetup) -> DPoPClient:
    dpop = DPoPClient(shared.server)
    dpop.fetch_nonce(_auth(shared.agent))
    return dpop


def test_the_token_endpoint_is_where_the_proofs_point(server: RunningServer) -> None:
    metadata = httpx.get(server.base_url + "/.well-known/oauth-authorization-server").json()
    assert metadata["token_endpoint"] == server.issuer + TOKEN_PATH
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]
    assert "none" not in metadata["dpop_signing_alg_values_supported"]
    assert not [a for a in metadata["dpop_signing_alg_values_supported"] if a.startswith("HS")]


# nonces ------------------------------------------------------------------------------------
def test_the_nonce_dance(shared: TenantSetup) -> None:
    dpop = DPoPClient(shared.server)
    auth = _auth(shared.agent)
    first = send(shared.server, _form(shared), auth, [dpop.proof()])  # no nonce yet
    body = assert_oauth_error(first, 400, "use_dpop_nonce")
    nonce = first.headers["DPoP-Nonce"]
    assert nonce and nonce.isascii() and " " not in nonce
    assert "access_token" not in body
    dpop.nonce = nonce
    token = _bound(send(shared.server, _form(shared), auth, [dpop.proof()]), dpop)
    assert token
    # the nonce the success answer carried works for the next proof, and the next…
    for _ in range(2):
        _bound(send(shared.server, _form(shared), auth, [dpop.proof()]), dpop)
    # a nonce the server never issued is answered with a real one
    for made_up in ("made-up", "A" * 32, nonce[:-1] + ("A" if nonce[-1] != "A" else "B")):
        response = send(shared.server, _form(shared), auth, [dpop.proof(nonce=made_up)])
        assert_oauth_error(response, 400, "use_dpop_nonce")
        assert response.headers["DPoP-Nonce"]


def test_a_bearer_request_is_untouched_by_nonces(shared: TenantSetup) -> None:
    response = send(shared.server, _form(shared), _auth(shared.agent), [])
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    assert "cnf" not in verify(shared.server, response.json()["access_token"], shared.crm)


# bound tokens ------------------------------------------------------------------------------
def test_client_credentials_with_a_proof_gives_a_bound_token(
    shared: TenantSetup, client: DPoPClient
) -> None:
    response = client.post(_form(shared), _auth(shared.agent))
    token = _bound(response, client)
    claims = verify(shared.server, token, shared.crm)  # PyJWT against /jwks
    assert claims["cnf"] == {"jkt": client.key.thumbprint}
    assert claims["sub"] == claims["client_id"] == shared.agent["id"]
    seen = introspection(shared.server, introspector_of(shared), token)
    assert seen["active"] is True
    assert seen["token_type"] == "DPoP"
    assert seen["cnf"] == {"jkt": client.key.thumbprint}
    bearer = send(shared.server, _form(shared), _auth(shared.agent), []).json()["access_token"]
    seen = introspection(shared.server, introspector_of(shared), bearer)
    assert seen["token_type"] == "Bearer"
    assert "cnf" not in seen
    # another key, another binding
    other = DPoPClient(shared.server, nonce=client.nonce)
    assert other.key.thumbprint != client.key.thumbprint
    _bound(other.post(_form(shared), _auth(shared.agent)), other)


def test_the_tests_thumbprint_is_rfc_7638() -> None:
    """The independent thumbprint above, against RFC 7638 §3.1's worked example."""
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
         "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
         "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
         "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqD"
         "Kgw")  # fmt: skip
    example = {"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    key = ProofKey()
    assert key.thumbprint == jwk_thumbprint({**key.public_jwk, "kid": "ignored", "use": "sig"})


# every check ---------------------------------------------------------------------------------
def _bad_proofs(dpop: DPoPClient) -> dict[str, str]:
    key, htu, now = dpop.key, dpop.htu, int(time.time())
    port = urlsplit(htu).port
    assert port is not None
    base = {"jti": "j-" + str(time.time_ns()), "htm": "POST", "htu": htu, "iat": now,
            "nonce": dpop.nonce}  # fmt: skip
    other = ProofKey()
    return {
        "typ JWT": dpop.proof(header={"typ": "JWT"}),
        "typ at+jwt": dpop.proof(header={"typ": "at+jwt"}),
        "no typ": dpop.proof(header={"typ": None}),
        "alg none": unsigned_jwt({"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk}, base),
        "alg HS256": jwt.encode(
            base,
            b"k" * 64,
            algorithm="HS256",
            headers={"typ": "dpop+jwt", "jwk": {"kty": "oct", "k": "a" * 86}},
        ),
        "alg HS256, EC jwk": jwt.encode(
            base, b"k" * 64, algorithm="HS256", headers={"typ": "dpop+jwt", "jwk": key.public_jwk}
        ),
        "private key in jwk": dpop.proof(header={"jwk": key.private_jwk}),
        "no jwk": dpop.proof(header={"jwk": None}),
        "jwk of a symmetric key": dpop.proof(header={"jwk": {"kty": "oct", "k": "a" * 43}}),
        "jwk of another key": dpop.proof(header={"jwk": other.public_jwk}),
        "jwk not an object": dpop.proof(header={"jwk": "EC"}),
        "signed by another key": dpop.proof(signer=other.private),
        "signature cut": dpop.proof()[:-4],
        "not a JWS": "garbage",
        "htm GET": dpop.proof(htm="GET"),
        "htm post": dpop.proof(htm="post"),
        "htu of introspection": key.proof(
            htu.replace(TOKEN_PATH, "/oauth/introspect"), nonce=dpop.nonce
        ),
        "htu of another host": key.proof(htu.replace("127.0.0.1", "localhost"), nonce=dpop.nonce),
        "htu of another port": key.proof(
            htu.replace(f":{port}/", f":{port + 1}/"), nonce=dpop.nonce
        ),
        "htu https": key.proof(htu.replace("http:", "https:"), nonce=dpop.nonce),
        "htu with a trailing slash": key.proof(htu + "/", nonce=dpop.nonce),
        "htu relative": key.proof(TOKEN_PATH, nonce=dpop.nonce),
        "iat 10 minutes old": dpop.proof(claims={"iat": now - 600}),
        "iat 10 minutes ahead": dpop.proof(claims={"iat": now + 600}),
        "iat a string": dpop.proof(claims={"iat": str(now)}),
        "no iat": dpop.proof(claims={"iat": None}),
        "no jti": dpop.proof(claims={"jti": None}),
        "no htm": dpop.proof(claims={"htm": None}),
        "no htu": dpop.proof(claims={"htu": None}),
    }


def test_every_proof_check(shared: TenantSetup, client: DPoPClient) -> None:
    auth = _auth(shared.agent)
    for name, proof in _bad_proofs(client).items():
        response = send(shared.server, _form(shared), auth, [proof])
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"] == "invalid_dpop_proof", (name, response.text)
        assert_oauth_error(response, 400, "invalid_dpop_proof")
    # the same builder, nothing wrong: a token (so the refusals above are the checks' doing)
    _bound(client.post(_form(shared), auth), client)


def test_iat_within_the_window_is_accepted(shared: TenantSetup, client: DPoPClient) -> None:
    auth = _auth(shared.agent)
    for skew in (-20, 20):
        proof = client.proof(claims={"iat": int(time.time()) + skew})
        _bound(send(shared.server, _form(shared), auth, [proof]), client)


def test_a_proof_is_good_for_one_request(shared: TenantSetup, client: DPoPClient) -> None:
    auth = _auth(shared.agent)
    proof = client.proof()
    _bound(send(shared.server, _form(shared), auth, [proof]), client)
    replayed = send(shared.server, _form(shared), auth, [proof])
    assert_oauth_error(replayed, 400, "invalid_dpop_proof")
    # also when another client of the tenant replays it
    other = shared.new_agent("other-bot", "deals:read")
    replayed = send(shared.server, _form(shared), _auth(other), [proof])
    assert_oauth_error(replayed, 400, "invalid_dpop_proof")


def test_exactly_one_dpop_header(shared: TenantSetup, client: DPoPClient) -> None:
    auth = _auth(shared.agent)
    for proofs in ([client.proof(), client.proof()], [client.proof()] * 2):
        response = send(shared.server, _form(shared), auth, proofs)
        assert_oauth_error(response, 400, "invalid_dpop_proof")
    empty = send(shared.server, _form(shared), auth, [""])
    assert_oauth_error(empty, 400, "invalid_dpop_proof")


def test_htu_ignores_query_and_fragment(shared: TenantSetup, client: DPoPClient) -> None:
    auth = _auth(shared.agent)
    htu = client.htu
    scheme_host = htu.split(TOKEN_PATH)[0]
    for variant in (
        htu + "?x=1",
        htu + "#frag",
        htu + "?x=1#frag",
        scheme_host.upper() + TOKEN_PATH,  # RFC 3986 §6.2.2.1: scheme and host are case-free
        scheme_host + "/oauth/%74oken",  # §6.2.2.2: an unreserved character percent-encoded
    ):
        response = send(shared.server, _form(shared), auth, [client.proof(claims={"htu": variant})])
        assert response.status_code == 200, (variant, response.text)
        _bound(response, client)


def test_a_good_proof_on_a_refused_request(shared: TenantSetup, client: DPoPClient) -> None:
    """The grant's or the client authentication's error, not a DPoP one."""
    response = client.post({**_form(shared), "scope": "deals:admin"}, _auth(shared.agent))
    assert_oauth_error(response, 400, "invalid_scope")
    assert response.headers.get("DPoP-Nonce")
    wrong = send(shared.server, _form(shared), (shared.agent["client_id"], "wrong"),
                 [client.proof()])  # fmt: skip
    assert_oauth_error(wrong, 401, "invalid_client")


# token exchange ------------------------------------------------------------------------------
@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with running_idp() as running:
        yield running


def test_token_exchange_with_a_proof_binds_the_delegated_token(
    tenant: TenantSetup, idp: FakeIdP
) -> None:
    server = tenant.server
    server.cli("issuers", "add", idp.issuer, "--tenant", tenant.name,
               "--jwks-uri", idp.jwks_uri, "--audience", "valetkey")  # fmt: skip
    mia = server.cli("users", "create", "mia@acme.example", "--tenant", tenant.name)
    server.cli("delegations", "create", "--tenant", tenant.name, "--user", "mia@acme.example",
               "--agent", tenant.agent["id"], "--scope", "deals:read")  # fmt: skip
    dpop = DPoPClient(server)
    form = {"grant_type": EXCHANGE, "subject_token": idp.assertion("mia@acme.example"),
            "subject_token_type": JWT_TYPE, "resource": tenant.crm}  # fmt: skip
    response = dpop.post(form, _auth(tenant.agent))
    token = _bound(response, dpop)
    assert response.json()["issued_token_type"] == ("urn:ietf:params:oauth:token-type:access_token")
    claims = verify(server, token, tenant.crm)
    assert claims["sub"] == mia["id"]
    assert claims["act"] == {"sub": tenant.agent["id"]}
    assert claims["cnf"] == {"jkt": dpop.key.thumbprint}
    seen = introspection(server, introspector_of(tenant), token)
    assert (seen["token_type"], seen["cnf"]) == ("DPoP", {"jkt": dpop.key.thumbprint})
    # a bad proof on an exchange is refused like anywhere else
    form["subject_token"] = idp.assertion("mia@acme.example")
    bad = send(server, form, _auth(tenant.agent), [dpop.proof(htm="GET")])
    assert_oauth_error(bad, 400, "invalid_dpop_proof")


def test_a_bound_token_stays_bound_through_exchange(tenant: TenantSetup, idp: FakeIdP) -> None:
    """Binding is never dropped: a bound subject needs a bound exchange, and a bound actor
    token needs a proof from its own key."""
    server = tenant.server
    server.cli("issuers", "add", idp.issuer, "--tenant", tenant.name,
               "--jwks-uri", idp.jwks_uri, "--audience", "valetkey")  # fmt: skip
    server.cli("users", "create", "mia@acme.example", "--tenant", tenant.name)
    helper = tenant.new_agent("helper", "deals:read")
    server.cli("delegations", "create", "--tenant", tenant.name, "--user", "mia@acme.example",
               "--agent", tenant.agent["id"], "--scope", "deals:read",
               "--sub-agent", helper["id"])  # fmt: skip
    first = DPoPClient(server)
    bound = _bound(first.post({"grant_type": EXCHANGE, "subject_token_type": JWT_TYPE,
                               "subject_token": idp.assertion("mia@acme.example"),
                               "resource": tenant.crm}, _auth(tenant.agent)), first)  # fmt: skip
    chain = {"grant_type": EXCHANGE, "subject_token": bound,
             "subject_token_type": "urn:ietf:params:oauth:token-type:access_token"}  # fmt: skip
    bearer = send(server, chain, _auth(helper), [])
    assert_oauth_error(bearer, 400, "invalid_dpop_proof")
    second = DPoPClient(server)
    rebound = verify(server, _bound(second.post(chain, _auth(helper)), second), tenant.crm)
    assert rebound["cnf"] == {"jkt": second.key.thumbprint}  # bound to the sub-agent's key
    # The agent's own bound token as actor_token: only with a proof of that key.
    own = _bound(first.post(_form(tenant), _auth(tenant.agent)), first)
    with_actor = {"grant_type": EXCHANGE, "subject_token_type": JWT_TYPE,
                  "subject_token": idp.assertion("mia@acme.example"), "resource": tenant.crm,
                  "actor_token": own,
                  "actor_token_type": "urn:ietf:params:oauth:token-type:access_token"}  # fmt: skip
    assert_oauth_error(send(server, with_actor, _auth(tenant.agent), []), 400,
                       "invalid_dpop_proof")  # fmt: skip
    assert_oauth_error(second.post(with_actor, _auth(tenant.agent)), 400, "invalid_dpop_proof")
    assert first.post(with_actor, _auth(tenant.agent)).status_code == 200


# the tenant's require-DPoP -----------------------------------------------------------------
def test_a_tenant_may_require_dpop(tenant: TenantSetup) -> None:
    server, auth = tenant.server, _auth(tenant.agent)
    form = _form(tenant)
    server.cli("tenants", "set", tenant.name, "--require-dpop")
    response = send(server, form, auth, [])
    body = assert_oauth_error(response, 400, "invalid_dpop_proof")
    assert "DPoP" in body["error_description"]
    dpop = DPoPClient(server)
    _bound(dpop.post(form, auth), dpop)
    # a DPoP request that fails its checks is still refused
    assert_oauth_error(send(server, form, auth, [dpop.proof(htm="GET")]), 400,
                       "invalid_dpop_proof")  # fmt: skip
    server.cli("tenants", "set", tenant.name, "--no-require-dpop")
    response = send(server, form, auth, [])
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    assert "cnf" not in verify(server, response.json()["access_token"], tenant.crm)
    _bound(dpop.post(form, auth), dpop)  # DPoP stays available
