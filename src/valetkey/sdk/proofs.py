"""DPoP proofs as a resource server checks them (RFC 9449 §4.3, §7.1).

A DPoP-bound token (`cnf.jkt`) is worth nothing without a proof signed by the key it is
bound to, made for this very request (`htm`, `htu`), just now (`iat`), for this very token
(`ath`), and never seen before (`jti`, remembered in this process for the proof's
lifetime). Several processes behind one load balancer each remember their own proofs; a
replay to another process within the `iat` window is the residual risk (ValetKey itself
records proof ids in its database).
"""

import hmac
import re
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from valetkey.sdk import _jose
from valetkey.sdk.errors import InvalidToken

PROOF_TYPES = ("dpop+jwt", "application/dpop+jwt")
MAX_PROOF_LENGTH = 8192
MAX_REMEMBERED = 100_000
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _bad(description: str) -> InvalidToken:
    return InvalidToken("invalid_dpop_proof", description, scheme="DPoP")


def canonical_htu(url: str) -> str:
    """A URL as `htu` compares (RFC 9449 §4.3, RFC 3986 §6.2.2, §6.2.3): scheme and host
    lowercased, default port dropped, percent-encodings normalized, no query or fragment.
    ValueError unless an absolute http(s) URL."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError("not a URI")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError("not an absolute http(s) URI")
    port = parts.port
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _PERCENT.sub(_normalize_escape, parts.path) or "/"
    return f"{scheme}://{netloc}{path}"


def _normalize_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group()[1:], 16))
    return char if char in _UNRESERVED else match.group().upper()


class ReplayCache:
    """Proof ids seen in this process, each kept until its proof could no longer pass."""

    def __init__(self, capacity: int = MAX_REMEMBERED) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def first_use(self, key: str, until: float, now: float) -> bool:
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) <= now
                                  or len(self._seen) >= self._capacity):  # fmt: skip
                self._seen.popitem(last=False)
            if key in self._seen:
                return False
            self._seen[key] = until
            return True


def verify_proof(
    proof: str,
    *,
    token: str,
    jkt: str,
    method: str,
    url: str,
    now: float,
    replays: ReplayCache,
    max_age: int,
    leeway: int,
) -> None:
    """Check one proof for a request presenting `token` bound to `jkt`; InvalidToken
    (`invalid_dpop_proof`) on any failure."""
    if len(proof) > MAX_PROOF_LENGTH:
        raise _bad("the DPoP proof is too large")
    try:
        header = _jose.unverified_header(proof)
    except ValueError as exc:
        raise _bad("the DPoP proof is not a compact JWS") from exc
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in PROOF_TYPES:
        raise _bad("the DPoP proof's typ must be dpop+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _jose.ASYMMETRIC:
        raise _bad("the DPoP proof's alg must be an asymmetric algorithm")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise _bad("the DPoP proof must carry its public key in a jwk header")
    try:
        key = _jose.import_public_jwk(jwk)
        claims = _jose.verified_payload(proof, key, alg)
    except ValueError as exc:
        raise _bad("the DPoP proof's key or signature is not valid") from exc
    if not hmac.compare_digest(_jose.thumbprint(key), jkt):
        raise _bad("the DPoP proof is not signed by the key the token is bound to")
    _check_claims(claims, token, method, url, now, max_age, leeway)
    jti = claims["jti"]
    if not replays.first_use(f"{jkt}:{jti}", now + max_age + leeway, now):
        raise _bad("the DPoP proof was already used")


def _check_claims(
    claims: dict[str, Any], token: str, method: str, url: str, now: float, max_age: int,
    leeway: int,
) -> None:  # fmt: skip
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise _bad("the DPoP proof must carry a jti")
    if claims.get("htm") != method.upper():
        raise _bad("the DPoP proof's htm does not match the request method")
    htu = claims.get("htu")
    try:
        same = isinstance(htu, str) and canonical_htu(htu) == canonical_htu(url)
    except ValueError:
        same = False
    if not same:
        raise _bad("the DPoP proof's htu does not match the request URL")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise _bad("the DPoP proof must carry a numeric iat")
    if iat > now + leeway or iat < now - max_age - leeway:
        raise _bad("the DPoP proof's iat is too old or in the future")
    ath = claims.get("ath")
    expected = _jose.access_token_hash(token)
    if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), expected.encode()):
        raise _bad("the DPoP proof's ath does not match the access token")
