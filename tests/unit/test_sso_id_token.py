"""The console's OpenID Connect relying party checks every ID token claim that matters;
tokens are made with PyJWT (not ValetKey's JOSE library)."""

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import KeySet

from valetkey.identity.models import TrustedIssuer
from valetkey.oauth.sso import SsoClient, SsoError

ISSUER = "https://login.acme.example"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


class _Keys:
    """The issuer's published keys (what RemoteKeySets would fetch from its jwks_uri)."""

    async def key_set(self, uri: str, kid: str | None) -> KeySet:
        public = jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
        return KeySet.import_key_set({"keys": [{**public, "kid": "k1", "alg": "ES256"}]})


def _issuer(claim: str = "sub") -> TrustedIssuer:
    return TrustedIssuer("iss_1", "ten_1", ISSUER, ISSUER + "/jwks", None, claim, 0.0,
                         login_client_id="valetkey", login_label="Acme")  # fmt: skip


def _token(key: Any = KEY, alg: str = "ES256", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "valetkey", "sub": "mia@acme.example", "iat": now,
            "exp": now + 300, "nonce": "n-1", **claims}  # fmt: skip
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": "k1"})


async def _verify(token: str, claim: str = "sub") -> dict[str, Any]:
    return await SsoClient(_Keys()).verify_id_token(_issuer(claim), token, "n-1")  # type: ignore[arg-type]


async def test_a_good_id_token_is_accepted() -> None:
    assert (await _verify(_token()))["sub"] == "mia@acme.example"
    both = _token(aud=["valetkey", "other"], azp="valetkey")
    assert (await _verify(both))["azp"] == "valetkey"


@pytest.mark.parametrize(("claims", "why"), [
    ({"nonce": "n-2"}, "not for this sign-in"),
    ({"nonce": None}, "not for this sign-in"),
    ({"aud": "someone-else"}, "another client"),
    ({"aud": ["valetkey", "other"]}, "another party"),
    ({"azp": "other"}, "another party"),
    ({"iss": "https://evil.example"}, "another issuer"),
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"iat": int(time.time()) + 3600}, "from the future"),
])  # fmt: skip
async def test_claims_that_do_not_fit_are_refused(claims: dict[str, Any], why: str) -> None:
    with pytest.raises(SsoError, match=why):
        await _verify(_token(**claims))


async def test_keys_and_algorithms() -> None:
    with pytest.raises(SsoError, match="does not verify"):
        await _verify(_token(key=OTHER))
    with pytest.raises(SsoError, match="not allowed"):
        await _verify(_token(key="a-shared-secret-of-32-bytes-long!!", alg="HS256"))
    unsigned = jwt.encode({"iss": ISSUER, "aud": "valetkey", "nonce": "n-1"}, None,
                          algorithm="none")  # fmt: skip
    with pytest.raises(SsoError, match="not allowed"):
        await _verify(unsigned)


async def test_an_email_counts_only_when_the_issuer_verified_it() -> None:
    with pytest.raises(SsoError, match="not verified"):
        await _verify(_token(email="mia@acme.example"), claim="email")
    with pytest.raises(SsoError, match="not verified"):
        await _verify(_token(email="mia@acme.example", email_verified="true"), claim="email")
    ok = await _verify(_token(email="mia@acme.example", email_verified=True), claim="email")
    assert ok["email"] == "mia@acme.example"
