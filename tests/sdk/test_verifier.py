"""`TokenVerifier` against a live ValetKey's JWKS: it accepts the tokens ValetKey issues for
its audience and refuses wrong audiences, expired tokens, foreign issuers and keys, `none`
and HMAC, ID-token-shaped JWTs, and DPoP-bound tokens without the right proof. Bound
tokens and proofs come from an independent DPoP client (tests/support/dpop.py)."""

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.helpers import KeyPair, access_token, server_signing_key, unsigned_jwt
from tests.sdk.conftest import World
from tests.support.dpop import DPoPClient, ProofKey
from valetkey.sdk import InvalidToken, TokenVerifier, VerifiedToken


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(token: str) -> str:
    return b64url(hashlib.sha256(token.encode()).digest())


@pytest.fixture
def verifier(world: World) -> TokenVerifier:
    return TokenVerifier(world.issuer, world.crm)


def refused(verifier: TokenVerifier, token: str, error: str = "invalid_token", **kw: Any) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token, **kw)
    assert caught.value.error == error, caught.value
    return caught.value.description


def forged(world: World, **claims: Any) -> str:
    """A token signed with ValetKey's own active key, with claims a test cannot wait for."""
    kid, pem = server_signing_key(world.server)
    typ = claims.pop("typ", "at+jwt")
    now = int(time.time())
    body = {"iss": world.issuer, "sub": "agt_x", "client_id": "agt_x", "aud": world.crm,
            "scope": "deals:read", "iat": now, "exp": now + 60, "jti": "g.1", **claims}  # fmt: skip
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"typ": typ, "kid": kid}
    return jwt.encode(body, pem, algorithm="ES256", headers=headers)


def test_a_good_token(world: World, verifier: TokenVerifier) -> None:
    agent = world.agent()
    token = access_token(world.tenant, agent, scope="deals:read deals:write")
    verified = verifier.verify(token)
    assert isinstance(verified, VerifiedToken)
    assert verified.sub == verified.client_id == agent["id"] == verified.agent_id
    assert set(verified.scopes) == {"deals:read", "deals:write"}
    assert verified.has_scopes("deals:read") and not verified.has_scopes("deals:admin")
    assert verified.act == [] and verified.cnf is None and not verified.dpop_bound
    assert verified.audience == (world.crm,) and verified.tenant == world.tenant.tenant["id"]
    assert verified.expires_at > time.time() and verified.jti
    assert token not in repr(verified)


def test_audience_expiry_and_issuer(world: World, verifier: TokenVerifier) -> None:
    token = access_token(world.tenant)
    assert "audience" in refused(TokenVerifier(world.issuer, "https://other.example"), token)
    assert "another issuer" in refused(
        TokenVerifier(world.issuer, world.crm, jwks_uri=world.issuer + "/jwks"),
        forged(world, iss="https://evil.example"),
    )
    now = int(time.time())
    assert "expired" in refused(verifier, forged(world, iat=now - 200, exp=now - 60))
    verifier.verify(forged(world, iat=now - 200, exp=now - 10))  # within the 30 s leeway
    assert "not valid yet" in refused(verifier, forged(world, nbf=now + 120))
    assert "lacks" in refused(verifier, forged(world, client_id=None))
    aud_list = forged(world, aud=["https://elsewhere.example", world.crm])
    assert verifier.verify(aud_list).audience == ("https://elsewhere.example", world.crm)


def test_only_access_tokens_and_asymmetric_keys(world: World, verifier: TokenVerifier) -> None:
    assert "typ" in refused(verifier, forged(world, typ="JWT"))  # e.g. an ID token
    claims = {"iss": world.issuer, "sub": "x", "client_id": "x", "aud": world.crm,
              "iat": int(time.time()), "exp": int(time.time()) + 60, "jti": "n"}  # fmt: skip
    none = {"alg": "none", "typ": "at+jwt", "kid": "k"}
    assert "none" in refused(verifier, unsigned_jwt(none, claims, b"anything"))
    assert "not a JWT" in refused(verifier, unsigned_jwt(none, claims))  # no signature at all
    public = json.dumps(jwt.PyJWKClient(world.issuer + "/jwks").get_jwk_set().keys[0]._jwk_data)
    hmac_token = jwt.encode(claims, public.encode() * 2, algorithm="HS256",
                            headers={"typ": "at+jwt", "kid": "k"})  # fmt: skip
    assert "HS256" in refused(verifier, hmac_token)
    assert "not a JWT" in refused(verifier, "not-a-token")
    for bad in (("none",), ("HS256",), ()):
        with pytest.raises(ValueError, match="asymmetric"):
            TokenVerifier(world.issuer, world.crm, algorithms=bad)


def test_foreign_keys_are_refused_and_refetches_rate_limited(world: World) -> None:
    verifier = TokenVerifier(world.issuer, world.crm, min_refetch_interval=0.5)
    verifier.verify(access_token(world.tenant))
    assert verifier.jwks_fetches == 1
    own = KeyPair.generate()  # a token that claims to be ValetKey's, signed by someone else
    now = int(time.time())
    claims = {"iss": world.issuer, "sub": "agt_x", "client_id": "agt_x", "aud": world.crm,
              "iat": now, "exp": now + 60, "jti": "f.1"}  # fmt: skip
    foreign = own.sign(claims, headers={"typ": "at+jwt", "kid": "foreign-1"})
    time.sleep(0.6)
    assert "not signed by a key of the issuer" in refused(verifier, foreign)
    assert verifier.jwks_fetches == 2  # an unknown kid: one refetch ...
    for _ in range(5):
        refused(verifier, foreign)
    assert verifier.jwks_fetches == 2  # ... and no more within the interval
    kid, _pem = server_signing_key(world.server)
    impostor = own.sign(claims, headers={"typ": "at+jwt", "kid": kid})  # ValetKey's kid
    assert "signature" in refused(verifier, impostor)


@pytest.fixture(scope="module")
def bound(world: World) -> tuple[str, DPoPClient]:
    """A DPoP-bound token and the independent client that holds its key."""
    agent = world.agent()
    client = DPoPClient(world.server)
    response = client.post({"grant_type": "client_credentials", "resource": world.crm},
                           (agent["client_id"], agent["client_secret"]))  # fmt: skip
    assert response.status_code == 200 and response.json()["token_type"] == "DPoP"
    return str(response.json()["access_token"]), client


URL = "https://api.acme.example/deals/1"


def test_dpop_bound_tokens_need_the_right_proof(
    verifier: TokenVerifier, bound: tuple[str, DPoPClient]
) -> None:
    token, client = bound
    key = client.key

    def proof(**kw: Any) -> str:
        claims = {"ath": ath(token), **kw.pop("claims", {})}
        return key.proof(kw.pop("htu", URL), htm=kw.pop("htm", "GET"), claims=claims, **kw)

    good = proof()
    verified = verifier.verify(token, dpop=good, method="GET", url=URL + "?page=2")
    assert verified.dpop_bound and verified.cnf == {"jkt": key.thumbprint}
    replay = refused(verifier, token, "invalid_dpop_proof", dpop=good, method="GET", url=URL)
    assert "already used" in replay
    with pytest.raises(InvalidToken) as missing:
        verifier.verify(token)
    assert missing.value.scheme == "DPoP" and "proof" in missing.value.description
    cases = [
        (proof(signer=ec.generate_private_key(ec.SECP256R1())), "signature is not valid"),
        (ProofKey().proof(URL, htm="GET", claims={"ath": ath(token)}), "bound to"),
        (proof(htm="POST"), "htm"),
        (proof(htu="https://api.acme.example/deals/2"), "htu"),
        (proof(claims={"ath": ath(token + "x")}), "ath"),
        (proof(claims={"iat": int(time.time()) - 600}), "iat"),
        (proof(header={"typ": "JWT"}), "typ"),
    ]
    for bad, expected in cases:
        description = refused(verifier, token, "invalid_dpop_proof", dpop=bad, method="GET",
                              url=URL)  # fmt: skip
        assert expected in description, (expected, description)


def test_a_proof_with_an_unbound_token_is_refused(world: World, verifier: TokenVerifier) -> None:
    token = access_token(world.tenant)
    proof = ProofKey().proof(URL, htm="GET", claims={"ath": ath(token)})
    assert "not DPoP-bound" in refused(verifier, token, dpop=proof, method="GET", url=URL)


async def test_averify(world: World) -> None:
    verifier = TokenVerifier(world.issuer, world.crm)
    token = await asyncio.to_thread(access_token, world.tenant)
    verified = await verifier.averify(token)
    assert verified.client_id == world.tenant.agent["id"] and verifier.jwks_fetches == 1


@pytest.fixture
def back_to_es256(world: World) -> Iterator[None]:
    yield
    world.server.cli("keys", "rotate", "--alg", "ES256")


def test_a_new_eddsa_key_is_fetched_once(world: World, back_to_es256: None) -> None:
    verifier = TokenVerifier(world.issuer, world.crm, min_refetch_interval=0)
    verifier.verify(access_token(world.tenant))
    world.server.cli("keys", "rotate", "--alg", "EdDSA")  # published and signing at once
    token = access_token(world.tenant)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert verifier.verify(token).sub == world.tenant.agent["id"]
    assert verifier.jwks_fetches == 2
    es256_only = TokenVerifier(world.issuer, world.crm, algorithms=("ES256",))
    assert "EdDSA" in refused(es256_only, token)
