"""Client authentication at the token, revocation and introspection endpoints.

`client_secret_basic`, `client_secret_post` (RFC 6749 §2.3.1) and `private_key_jwt`
(RFC 7523 §2.2, RFC 7521 §4.2). One method per request. Assertion keys come only from the
client's registered keys — never from `jwk`, `jku`, `x5u` or `x5c` headers — and only the
algorithms below verify: never `none`, never HMAC (a public key is not a shared secret).
"""

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from valetkey.identity.models import Client
from valetkey.identity.secrets import secret_matches
from valetkey.oauth.errors import InvalidClient, InvalidRequest

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = [
    "ES256",
    "ES384",
    "ES512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
]
MAX_ASSERTION_LIFETIME = 3600
LEEWAY = 30
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


@dataclass(frozen=True, slots=True)
class PresentedCredentials:
    method: str
    client_id: str
    secret: str | None = None
    assertion: str | None = None


class AssertionReplayGuard(Protocol):
    async def consume_assertion(self, key: str, expires_at: float) -> bool:
        """Record a (client, jti) pair; False if it was seen before."""
        ...


def plausible_client_id(client_id: str) -> bool:
    """Ids with control characters or absurd lengths are unknown clients, not queries."""
    return 0 < len(client_id) <= 2048 and client_id.isprintable()


def extract_credentials(
    authorization: str | None, params: dict[str, str]
) -> PresentedCredentials | None:
    """Find the one client authentication method used; more than one is `invalid_request`."""
    found: list[PresentedCredentials] = []
    if authorization and authorization[:6].lower() == "basic ":
        found.append(_parse_basic(authorization[6:].strip()))
    if "client_secret" in params:
        found.append(
            PresentedCredentials(
                "client_secret_post", params.get("client_id", ""), secret=params["client_secret"]
            )
        )
    if "client_assertion" in params or "client_assertion_type" in params:
        if params.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidClient("client_assertion_type must be " + ASSERTION_TYPE)
        assertion = params.get("client_assertion", "")
        client_id = params.get("client_id") or _unverified_issuer(assertion)
        found.append(PresentedCredentials("private_key_jwt", client_id, assertion=assertion))
    if len(found) > 1:
        raise InvalidRequest("use exactly one client authentication method")
    if not found:
        # A public client (RFC 7591 "none") names itself; only a client registered as
        # public is accepted that way, and only for the code and refresh grants.
        named = params.get("client_id")
        return PresentedCredentials("none", named) if named else None
    creds = found[0]
    if params.get("client_id") not in (None, creds.client_id):
        raise InvalidRequest("client_id does not match the authenticated client")
    return creds


def _parse_basic(value: str) -> PresentedCredentials:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
        raw_id, raw_secret = decoded.split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidClient("malformed Basic credentials", basic_challenge=True) from exc
    return PresentedCredentials(
        "client_secret_basic", unquote_plus(raw_id), secret=unquote_plus(raw_secret)
    )


def _unverified_issuer(assertion: str) -> str:
    """Which client claims to have signed the assertion; verified later against its keys."""
    try:
        payload = assertion.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        issuer = claims.get("iss") if isinstance(claims, dict) else None
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidClient("client_assertion is not a JWT") from exc
    if not isinstance(issuer, str) or not issuer:
        raise InvalidClient("client_assertion has no iss")
    return issuer


def verify_secret(client: Client, creds: PresentedCredentials, now: float) -> None:
    secret = creds.secret or ""
    # Check every live secret (a rotation leaves two) without stopping early.
    ok = False
    for record in client.live_secrets(now):
        ok = secret_matches(secret, record.digest) or ok
    if not ok:
        raise InvalidClient(
            "client authentication failed", basic_challenge=creds.method == "client_secret_basic"
        )


async def verify_assertion(
    client: Client,
    creds: PresentedCredentials,
    audiences: tuple[str, ...],
    now: float,
    replay: AssertionReplayGuard,
) -> None:
    """RFC 7523 §3 checks, then single use of the `jti`."""
    if not client.jwks or not client.jwks.get("keys"):
        raise InvalidClient("client has no registered keys")
    assertion = creds.assertion or ""
    header = _header(assertion)
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise InvalidClient(f"assertion algorithm {alg!r} is not allowed")
    if str(header.get("typ", "")).lower() == "at+jwt":
        raise InvalidClient("an access token is not a client assertion")
    claims = _verified_claims(assertion, client.jwks, header.get("kid"), alg)
    _check_assertion_claims(claims, client.id, audiences, now)
    key_digest = hashlib.sha256(f"{client.id}\n{claims['jti']}".encode()).hexdigest()
    if not await replay.consume_assertion(key_digest, float(claims["exp"]) + LEEWAY):
        raise InvalidClient("client assertion was already used (jti replay)")


def _verified_claims(assertion: str, jwks: dict[str, Any], kid: Any, alg: str) -> dict[str, Any]:
    """Verify with the registered key named by `kid`, or with each registered key if none."""
    try:
        key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidClient("client's registered keys are unusable") from exc
    candidates = [k for k in key_set.keys if kid is None or k.kid == kid]
    for key in candidates:
        try:
            return dict(jwt.decode(assertion, key, algorithms=[alg]).claims)
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    raise InvalidClient("client assertion signature does not verify")


def token_kid(token: str) -> str | None:
    """The `kid` a JWT's header names, or None; unverified, used only to pick a key."""
    try:
        kid = _header(token).get("kid")
    except InvalidClient:
        return None
    return kid if isinstance(kid, str) else None


def _header(assertion: str) -> dict[str, Any]:
    try:
        segment = assertion.split(".")[0]
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidClient("client_assertion is not a JWT") from exc
    if not isinstance(header, dict):
        raise InvalidClient("client_assertion is not a JWT")
    return header


def _check_assertion_claims(
    claims: dict[str, Any], client_id: str, audiences: tuple[str, ...], now: float
) -> None:
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidClient("assertion iss and sub must both be the client id")
    aud = claims.get("aud")
    aud_list = aud if isinstance(aud, list) else [aud]
    if not any(a in audiences for a in aud_list):
        raise InvalidClient("assertion aud must be the issuer or the token endpoint")
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise InvalidClient("assertion must carry exp")
    if exp + LEEWAY <= now:
        raise InvalidClient("assertion has expired")
    if exp > now + MAX_ASSERTION_LIFETIME:
        raise InvalidClient("assertion lives too long (exp more than an hour ahead)")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None and (not isinstance(value, int | float) or value > now + LEEWAY):
            raise InvalidClient(f"assertion {name} is in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise InvalidClient("assertion must carry a jti")
