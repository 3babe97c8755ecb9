"""JWT access tokens (RFC 9068): minting, and verification against our own published keys."""

import base64
import functools
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from valetkey.oauth.keys import JoseKey

ACCESS_TOKEN_TYP = "at+jwt"
VERIFY_ALGORITHMS = ["ES256", "EdDSA"]
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])


def new_jti(generation: str = "0") -> str:
    """`<client token generation>.<128 random bits>`: unique, and tied to the generation."""
    return f"{generation}.{secrets.token_urlsafe(16)}"


def jti_generation(jti: str) -> str:
    return jti.split(".", 1)[0]


def mint_access_token(
    *,
    key: JoseKey,
    kid: str,
    alg: str,
    issuer: str,
    subject: str,
    client_id: str,
    audience: str,
    scope: Iterable[str],
    tenant: str,
    now: int,
    lifetime: int,
    generation: str = "0",
    extra: dict[str, Any] | None = None,
) -> IssuedToken:
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "client_id": client_id,
        "scope": " ".join(scope),
        "tenant": tenant,
        "iat": now,
        "exp": now + lifetime,
        "jti": new_jti(generation),
    }
    if extra:
        claims.update(extra)
    return IssuedToken(sign_compact(key, kid, alg, claims), claims)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=16)
def _encoded_header(kid: str, alg: str) -> bytes:
    return _b64(orjson.dumps({"typ": ACCESS_TOKEN_TYP, "alg": alg, "kid": kid}))


def sign_compact(key: JoseKey, kid: str, alg: str, claims: dict[str, Any]) -> str:
    """JWS compact serialization (RFC 7515 §7.1) signed with `cryptography` directly.

    Hand-written because it is the hottest call of token issuance: joserfc's `jwt.encode`
    took 66 µs a token here against 32 µs for these lines (header encoded once per key).
    Verification everywhere still goes through joserfc (and the tests verify with PyJWT).
    """
    signing_input = _encoded_header(kid, alg) + b"." + _b64(orjson.dumps(claims))
    private = key.private_key
    if alg == "ES256" and isinstance(private, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private.sign(signing_input, _ECDSA_SHA256))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4: R || S
    elif alg == "EdDSA" and isinstance(private, ed25519.Ed25519PrivateKey):
        signature = private.sign(signing_input)
    else:
        raise ValueError(f"cannot sign {alg} with this key")
    return (signing_input + b"." + _b64(signature)).decode()


class TokenInvalid(Exception):
    """Signature, type, issuer or lifetime check failed; the reason is for logs, not clients."""


def verify_access_token(
    token: str, key_set: KeySet, issuer: str, now: float, leeway: int = 0
) -> dict[str, Any]:
    """Check an access token we issued: our key, `typ: at+jwt`, our issuer, not expired."""
    try:
        decoded = jwt.decode(token, key_set, algorithms=VERIFY_ALGORITHMS)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenInvalid(f"undecodable or bad signature: {exc.__class__.__name__}") from exc
    if str(decoded.header.get("typ", "")).lower() != ACCESS_TOKEN_TYP:
        raise TokenInvalid("not an access token (typ)")
    claims = dict(decoded.claims)
    if claims.get("iss") != issuer:
        raise TokenInvalid("foreign issuer")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp + leeway <= now:
        raise TokenInvalid("expired")
    for name in ("jti", "sub", "client_id", "tenant"):
        if not isinstance(claims.get(name), str):
            raise TokenInvalid(f"missing {name}")
    return claims
