"""DPoP proof checks (RFC 9449 §4.3), one refusal at a time, with real keys."""

import base64
import secrets
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jws
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

from valetkey.oauth.dpop import (
    InvalidDPoPProof,
    NonceSource,
    UseDPoPNonce,
    access_token_hash,
    canonical_htu,
    verify_proof,
)

KEY = ECKey.generate_key("P-256")
OTHER_KEY = ECKey.generate_key("P-256")
URL = "https://as.example.com/token"
NOW = 1_700_000_000
SECRET = b"0123456789abcdef0123456789abcdef"


class Seen:
    """An in-memory replay guard with the store's contract: False once a key was seen."""

    def __init__(self) -> None:
        self.keys: dict[str, float] = {}

    async def consume_assertion(self, key: str, expires_at: float) -> bool:
        if key in self.keys:
            return False
        self.keys[key] = expires_at
        return True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _header(key: Key = KEY, **extra: Any) -> dict[str, Any]:
    return {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False), **extra}


def _claims(**extra: Any) -> dict[str, Any]:
    claims = {"jti": secrets.token_urlsafe(12), "htm": "POST", "htu": URL, "iat": NOW}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def signed(
    header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None, key: Key = KEY
) -> str:
    """A proof signed by joserfc with `key`."""
    header = header if header is not None else _header()
    payload = orjson.dumps(claims if claims is not None else _claims())
    return jws.serialize_compact(header, payload, key, algorithms=[header["alg"]])


def unsigned(header: dict[str, Any], claims: dict[str, Any] | None = None) -> str:
    """A proof joserfc would refuse to sign (alg none, a private jwk...), with junk signature."""
    payload = claims if claims is not None else _claims()
    return f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(payload))}.{_b64(b'x' * 64)}"


async def check(proof: str | None, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"method": "POST", "url": URL, "now": NOW, "replay": Seen()}
    options.update(kwargs)
    return await verify_proof(proof, **options)


async def refused(proof: str | None, match: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidDPoPProof, match=match) as caught:
        await check(proof, **kwargs)
    assert caught.value.error == "invalid_dpop_proof" and caught.value.status_code == 400
    if proof:
        assert proof not in caught.value.description


# accepted ----------------------------------------------------------------------------------


async def test_good_proof_is_accepted() -> None:
    claims = _claims()
    proof = await check(signed(claims=claims))
    assert proof.jkt == KEY.thumbprint()
    assert (proof.jti, proof.iat, proof.htm, proof.htu, proof.nonce) == (
        claims["jti"],
        NOW,
        "POST",
        URL,
        None,
    )


async def test_application_media_type_form_of_typ_is_accepted() -> None:
    await check(signed(_header(typ="application/DPoP+JWT")))


async def test_rsa_pss_and_eddsa_proofs_are_accepted_without_warnings() -> None:
    rsa = RSAKey.generate_key(2048)
    await check(signed(_header(rsa, alg="PS256"), key=rsa))
    # Signed by hand: joserfc warns on every EdDSA use, and warnings fail this suite.
    ed = OKPKey.generate_key("Ed25519")
    head = _b64(orjson.dumps(_header(ed, alg="EdDSA")))
    signing_input = f"{head}.{_b64(orjson.dumps(_claims()))}"
    private = ed.private_key
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    signature = private.sign(signing_input.encode())
    proof = await check(f"{signing_input}.{_b64(signature)}")
    assert proof.jkt == ed.thumbprint()


# the proof's shape -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    ["", "x", "a.b", "a.b.c", "a.b.c.d", "..", "é.é.é", "e30.e30.", "W10.e30.eA", "!!.e30.eA"],
)
async def test_garbage_is_refused(garbage: str) -> None:
    await refused(garbage, "not a compact JWS|jwk|typ")


async def test_missing_or_repeated_header_is_refused() -> None:
    await refused(None, "exactly one DPoP proof")


async def test_oversized_proof_is_refused() -> None:
    await refused(signed(claims=_claims(pad="x" * 9000)), "too large")


# the header --------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "dpop", None, 1])
async def test_wrong_typ_is_refused(typ: Any) -> None:
    header = _header(typ=typ) if typ is not None else {"alg": "ES256", "jwk": KEY.as_dict()}
    await refused(unsigned(header), "typ")


async def test_alg_none_is_refused() -> None:
    proof = unsigned(_header(alg="none"))
    await refused(proof, "alg")
    await refused(proof[: proof.rindex(".") + 1], "alg|compact JWS")  # `none`: no signature


async def test_hmac_alg_is_refused() -> None:
    secret = OctKey.generate_key(256)
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": secret.as_dict(private=False)}
    await refused(signed(header, key=secret), "alg")
    await refused(unsigned(_header(alg="HS256")), "alg")


async def test_private_key_in_jwk_is_refused() -> None:
    header = _header(jwk=KEY.as_dict(private=True))
    await refused(unsigned(header), "public key")


async def test_symmetric_jwk_is_refused() -> None:
    await refused(unsigned(_header(jwk={"kty": "oct", "k": "c2VjcmV0"})), "public key")
    await refused(unsigned(_header(jwk={"kty": "oct"})), "public key")


@pytest.mark.parametrize("jwk", [None, "key", ["k"], {}, {"kty": "EC", "crv": "P-256"}])
async def test_missing_or_unusable_jwk_is_refused(jwk: Any) -> None:
    header = _header()
    del header["jwk"]
    if jwk is not None:
        header["jwk"] = jwk
    await refused(unsigned(header), "jwk")


async def test_point_off_the_curve_is_refused() -> None:
    jwk = KEY.as_dict(private=False)
    jwk["y"] = jwk["x"]
    await refused(unsigned(_header(jwk=jwk)), "not a usable public key")


async def test_short_rsa_key_is_refused() -> None:
    jwk = {"kty": "RSA", "n": _b64((2**1023 + 1).to_bytes(128, "big")), "e": "AQAB"}
    await refused(unsigned(_header(alg="RS256", jwk=jwk)), "2048")


async def test_unencoded_payload_is_refused() -> None:
    await refused(unsigned(_header(b64=False, crit=["b64"])), "base64url")


# the signature -----------------------------------------------------------------------------


async def test_signature_by_another_key_is_refused() -> None:
    await refused(signed(_header(OTHER_KEY)), "signature")


async def test_tampered_claims_are_refused() -> None:
    head, _, signature = signed().split(".")
    forged = _b64(orjson.dumps(_claims()))
    await refused(f"{head}.{forged}.{signature}", "signature")


async def test_alg_not_matching_the_key_is_refused() -> None:
    await refused(unsigned(_header(alg="ES384")), "signature")
    await refused(unsigned(_header(alg="RS256")), "signature")


def hand_signed(header: dict[str, Any]) -> str:
    """ES256 with `cryptography` directly, for headers joserfc will not sign."""
    signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(_claims()))}"
    private = KEY.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def test_unknown_critical_header_is_refused() -> None:
    await check(hand_signed(_header()))  # the signature itself is good
    await refused(hand_signed(_header(crit=["exp"], exp=1)), "signature")


async def test_payload_that_is_not_an_object_is_refused() -> None:
    header = _header()
    payload = b"[1]"
    proof = jws.serialize_compact(header, payload, KEY, algorithms=["ES256"])
    await refused(proof, "JSON object")


# the claims --------------------------------------------------------------------------------


@pytest.mark.parametrize("jti", [None, "", 7, "j" * 257])
async def test_missing_or_oversized_jti_is_refused(jti: Any) -> None:
    claims = _claims()
    claims.pop("jti")
    if jti is not None:
        claims["jti"] = jti
    await refused(signed(claims=claims), "jti")


@pytest.mark.parametrize("htm", ["GET", "post", None])
async def test_htm_mismatch_is_refused(htm: str | None) -> None:
    claims = _claims(htm=htm) if htm else {k: v for k, v in _claims().items() if k != "htm"}
    await refused(signed(claims=claims), "htm")


@pytest.mark.parametrize(
    "htu",
    [
        "https://as.example.com/authorize",
        "https://as.example.com/token/",
        "https://other.example.com/token",
        "http://as.example.com/token",
        "https://as.example.com:8443/token",
        "/token",
        "urn:x:token",
        "https://as.example.com/tok en",
        7,
    ],
)
async def test_htu_mismatch_is_refused(htu: Any) -> None:
    await refused(signed(claims=_claims(htu=htu)), "htu")


async def test_missing_htu_is_refused() -> None:
    claims = {k: v for k, v in _claims().items() if k != "htu"}
    await refused(signed(claims=claims), "htu")


@pytest.mark.parametrize(
    ("htu", "url"),
    [
        (URL, URL + "?foo=bar#frag"),
        (URL + "?x=1", URL),
        (URL + "#f", URL + "?y=2"),
        ("HTTPS://AS.Example.COM:443/token", URL),
        ("https://as.example.com/%74oken", URL),
    ],
)
async def test_htu_is_compared_without_query_and_fragment(htu: str, url: str) -> None:
    await check(signed(claims=_claims(htu=htu)), url=url)


@pytest.mark.parametrize("iat", [NOW - 61, NOW + 61, NOW - 3600])
async def test_iat_too_old_or_in_the_future_is_refused(iat: int) -> None:
    await refused(signed(claims=_claims(iat=iat)), "too old or in the future")


async def test_iat_at_the_edges_of_the_window_is_accepted() -> None:
    await check(signed(claims=_claims(iat=NOW - 60)))
    await check(signed(claims=_claims(iat=NOW + 59.5)))
    await check(signed(claims=_claims(iat=NOW - 100)), iat_window=120)


@pytest.mark.parametrize("iat", ["1700000000", True, [NOW]])
async def test_non_numeric_iat_is_refused(iat: Any) -> None:
    await refused(signed(claims=_claims(iat=iat)), "numeric iat")


async def test_missing_iat_is_refused() -> None:
    claims = {k: v for k, v in _claims().items() if k != "iat"}
    await refused(signed(claims=claims), "numeric iat")


# ath ---------------------------------------------------------------------------------------


async def test_ath_must_match_the_access_token() -> None:
    token = "vk_at_" + secrets.token_urlsafe(32)
    await refused(signed(), "ath", access_token=token)
    await refused(signed(claims=_claims(ath=access_token_hash("other"))), "ath", access_token=token)
    await refused(signed(claims=_claims(ath=7)), "ath", access_token=token)
    await check(signed(claims=_claims(ath=access_token_hash(token))), access_token=token)


async def test_ath_is_ignored_without_an_access_token() -> None:
    await check(signed(claims=_claims(ath="whatever")))


# nonces ------------------------------------------------------------------------------------


async def test_missing_nonce_asks_for_one_that_then_works() -> None:
    nonces = NonceSource(SECRET)
    seen = Seen()
    claims = _claims()
    with pytest.raises(UseDPoPNonce) as caught:
        await check(signed(claims=claims), nonces=nonces, replay=seen)
    asked = caught.value
    assert (asked.error, asked.status_code) == ("use_dpop_nonce", 400)
    assert asked.description == "Authorization server requires nonce in DPoP proof"
    assert nonces.valid(asked.nonce, NOW)
    assert not seen.keys  # a refused proof does not use up its jti
    retry = await check(signed(claims={**claims, "nonce": asked.nonce}), nonces=nonces, replay=seen)
    assert retry.nonce == asked.nonce


@pytest.mark.parametrize("nonce", ["", "garbage", 7])
async def test_invalid_nonce_asks_for_a_fresh_one(nonce: Any) -> None:
    with pytest.raises(UseDPoPNonce):
        await check(signed(claims=_claims(nonce=nonce)), nonces=NonceSource(SECRET))


async def test_nonce_from_another_secret_is_not_valid() -> None:
    other = NonceSource(b"another secret, as long as ours").issue(NOW)
    with pytest.raises(UseDPoPNonce):
        await check(signed(claims=_claims(nonce=other)), nonces=NonceSource(SECRET))


def test_nonce_lives_between_one_and_two_windows() -> None:
    nonces = NonceSource(SECRET, window=300)
    start = 300 * 1000  # the start of a bucket
    nonce = nonces.issue(start)
    assert nonces.valid(nonce, start)
    assert nonces.valid(nonce, start + 599)
    assert not nonces.valid(nonce, start + 600)  # two windows on: the old bucket is gone
    assert not nonces.valid(nonce, start - 1)  # issued in the future
    assert nonces.issue(start + 299) == nonce
    assert NonceSource(SECRET, window=300).valid(nonce, start + 1)  # another node, same secret


@pytest.mark.parametrize(
    "nonce",
    ["", "x", "A" * 32, "A" * 31 + "=", "é" * 32, "\x00" * 32, None, 12],
)
def test_garbage_nonces_are_not_valid(nonce: Any) -> None:
    assert not NonceSource(SECRET).valid(nonce, NOW)


def test_tampered_nonce_is_not_valid() -> None:
    nonces = NonceSource(SECRET)
    nonce = nonces.issue(NOW)
    flipped = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    assert not nonces.valid(flipped, NOW)


def test_nonce_source_refuses_a_short_secret_or_window() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        NonceSource(b"short")
    with pytest.raises(ValueError, match="window"):
        NonceSource(SECRET, window=0)


# replay ------------------------------------------------------------------------------------


async def test_replayed_jti_is_refused() -> None:
    seen = Seen()
    proof = signed()
    await check(proof, replay=seen)
    await refused(proof, "already used", replay=seen)
    key, expires_at = next(iter(seen.keys.items()))
    assert len(key) == 64  # fits the used-assertions store's key column
    assert expires_at == NOW + 120


async def test_same_jti_from_another_key_is_another_proof() -> None:
    seen = Seen()
    claims = _claims()
    await check(signed(claims=claims), replay=seen)
    await check(signed(_header(OTHER_KEY), claims, key=OTHER_KEY), replay=seen)
    await refused(signed(claims=claims), "already used", replay=seen)


# helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://as.example.com/token?a=b#c", "https://as.example.com/token"),
        ("HTTPS://User:pw@AS.example.COM:443/Token", "https://as.example.com/Token"),
        ("http://as.example.com:80", "http://as.example.com/"),
        ("http://as.example.com:8080/x", "http://as.example.com:8080/x"),
        ("https://[::1]:8443/t", "https://[::1]:8443/t"),
        ("https://a.example/%7e%2f%41", "https://a.example/~%2FA"),
    ],
)
def test_canonical_htu(url: str, canonical: str) -> None:
    assert canonical_htu(url) == canonical


@pytest.mark.parametrize(
    "url", ["/token", "ftp://a.example/x", "https:///x", "https://a.example:99999/", "https://a b/"]
)
def test_canonical_htu_refuses_what_is_not_an_http_url(url: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        canonical_htu(url)
