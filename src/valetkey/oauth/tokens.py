"""JWT access tokens (RFC 9068): minting, and verification against our own published keys."""

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from valetkey.oauth.keys import JoseKey

ACCESS_TOKEN_TYP = "at+jwt"
VERIFY_ALGORITHMS = ["ES256", "EdDSA"]


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
    header = {"alg": alg, "typ": ACCESS_TOKEN_TYP, "kid": kid}
    return IssuedToken(jwt.encode(header, claims, key, algorithms=[alg]), claims)


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
