"""DPoP proofs (RFC 9449 §4.3), checked by the authorization server and resource servers.

A proof binds one HTTP request to a key the client holds. The key travels in the proof's
own `jwk` header, so the signature only shows possession; what makes it worth anything is
everything else checked here: the method and URL, a short `iat` window, the access token's
hash, a server nonce when one is asked for, and single use of the `jti`. Only asymmetric
algorithms verify (a public key is not a shared secret), and a `jwk` carrying private
members is refused rather than stripped: a client that leaks its private key is broken.
"""

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
from joserfc import jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import JWKRegistry, Key

from valetkey.oauth.client_auth import ASSERTION_ALGORITHMS
from valetkey.oauth.errors import OAuthError

DPOP_ALGORITHMS = ASSERTION_ALGORITHMS  # asymmetric only: never `none`, never HMAC
PROOF_TYPES = ("dpop+jwt", "application/dpop+jwt")  # media types compare case-insensitively
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_PROOF_LENGTH = 8192
MAX_JTI_LENGTH = 256
MIN_RSA_BITS = 2048  # RFC 7518 §3.3
NONCE_REQUIRED = "Authorization server requires nonce in DPoP proof"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class InvalidDPoPProof(OAuthError):
    """The DPoP proof is missing, malformed, or fails a check of RFC 9449 §4.3."""

    error = "invalid_dpop_proof"
    status_code = 400


class UseDPoPNonce(OAuthError):
    """The server requires a nonce in the proof (RFC 9449 §8); `nonce` goes in `DPoP-Nonce`."""

    error = "use_dpop_nonce"
    status_code = 400

    def __init__(self, description: str = "", *, nonce: str) -> None:
        super().__init__(description)
        self.nonce = nonce


@dataclass(frozen=True, slots=True)
class DPoPProof:
    jkt: str  # RFC 7638 thumbprint of the proof key: what tokens are bound to (`cnf.jkt`)
    jti: str
    iat: int
    htm: str
    htu: str  # as the client wrote it
    nonce: str | None


class ProofReplayGuard(Protocol):
    async def consume_assertion(self, key: str, expires_at: float) -> bool:
        """Record a key until `expires_at`; False if it was seen before."""
        ...


class NonceSource:
    """Stateless server nonces (RFC 9449 §8): any process holding the secret can check them.

    A nonce is base64url(bucket as 8 bytes || HMAC-SHA256(secret, label || bucket)[:16])
    where bucket = now // window, and it is accepted in its own bucket and the next one, so
    it lives between one and two windows. Nothing is stored, so nodes need no shared state.
    """

    _LABEL = b"valetkey dpop nonce\x00"  # keeps these MACs apart from other uses of the secret
    _SHAPE = re.compile(r"[A-Za-z0-9_-]{32}")

    def __init__(self, secret: bytes, window: int = 300) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if window <= 0:
            raise ValueError("the nonce window must be positive")
        self._secret = secret
        self._window = window

    def issue(self, now: float) -> str:
        bucket = int(now // self._window)
        raw = bucket.to_bytes(8, "big") + self._mac(bucket)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def valid(self, nonce: str, now: float) -> bool:
        if not isinstance(nonce, str) or not self._SHAPE.fullmatch(nonce):
            return False
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        bucket = int.from_bytes(raw[:8], "big")
        current = int(now // self._window)
        if bucket not in (current, current - 1):
            return False
        return hmac.compare_digest(raw[8:], self._mac(bucket))

    def _mac(self, bucket: int) -> bytes:
        message = self._LABEL + bucket.to_bytes(8, "big")
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:16]


def jwk_thumbprint(jwk_dict: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: only the key type's required members count.

    Raises ValueError if the dict is not a usable key.
    """
    try:
        return JWKRegistry.import_key(jwk_dict).thumbprint()
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError("not a usable JWK") from exc


def access_token_hash(token: str) -> str:
    """`ath` (RFC 9449 §4.2): base64url(SHA-256(ASCII(token))); ValueError if not ASCII."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def canonical_htu(url: str) -> str:
    """The form `htu` is compared in (RFC 9449 §4.3, RFC 3986 §6.2.2, §6.2.3).

    Scheme and host lowercased, default port dropped, empty path as `/`, percent-encodings
    normalized; userinfo, query and fragment left out. Raises ValueError unless http(s).
    """
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError("not a URI")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError("not an absolute http(s) URI")
    port = parts.port  # ValueError if malformed
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _PERCENT.sub(_normalize_escape, parts.path) or "/"
    return f"{scheme}://{netloc}{path}"


def _normalize_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group()[1:], 16))
    return char if char in _UNRESERVED else match.group().upper()


async def verify_proof(
    proof: str | None,
    *,
    method: str,
    url: str,
    now: float,
    replay: ProofReplayGuard,
    nonces: NonceSource | None = None,
    access_token: str | None = None,
    iat_window: int = 60,
) -> DPoPProof:
    """Check one DPoP proof for this request; its `jti` is used up if every check passes.

    `proof` is the `DPoP` header's value; the caller passes None when the header is absent
    or appears more than once (RFC 9449 §4.3: exactly one). `method` is the request's method
    (uppercase) and `url` its full URL; pass `access_token` at resource servers (checks
    `ath`) and `nonces` where a server nonce is required.
    """
    if proof is None:
        raise InvalidDPoPProof("exactly one DPoP proof is required")
    header = _parse(proof)
    alg = _check_header(header)
    key = _public_key(header["jwk"])
    claims = _verified_claims(proof, key, alg)
    jti, iat, htu = _check_claims(claims, method, url, now, iat_window)
    if access_token is not None:
        _check_ath(claims.get("ath"), access_token)
    nonce = claims.get("nonce")
    if nonces is not None and not (isinstance(nonce, str) and nonces.valid(nonce, now)):
        raise UseDPoPNonce(NONCE_REQUIRED, nonce=nonces.issue(now))
    jkt = key.thumbprint()
    # A digest of 64 hex characters: the key shares the client assertions' store and width.
    replay_key = hashlib.sha256(f"dpop:{jkt}:{jti}".encode()).hexdigest()
    if not await replay.consume_assertion(replay_key, now + iat_window * 2):
        raise InvalidDPoPProof("the DPoP proof's jti was already used")
    return DPoPProof(
        jkt=jkt,
        jti=jti,
        iat=int(iat),
        htm=method,
        htu=htu,
        nonce=nonce if isinstance(nonce, str) else None,
    )


def _parse(proof: str) -> dict[str, Any]:
    """One compact JWS, small, ASCII, with a JSON object as its header."""
    if len(proof) > MAX_PROOF_LENGTH:
        raise InvalidDPoPProof("the DPoP proof is too large")
    segments = proof.split(".")
    if not proof.isascii() or len(segments) != 3 or not all(segments):
        raise InvalidDPoPProof("the DPoP proof is not a compact JWS")
    header = _decode_json(segments[0])
    if not isinstance(header, dict):
        raise InvalidDPoPProof("the DPoP proof is not a compact JWS")
    return header


def _decode_json(segment: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidDPoPProof("the DPoP proof is not a compact JWS") from exc


def _check_header(header: dict[str, Any]) -> str:
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in PROOF_TYPES:
        raise InvalidDPoPProof("the DPoP proof's typ must be dpop+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in DPOP_ALGORITHMS:
        raise InvalidDPoPProof("the DPoP proof's alg must be an allowed asymmetric algorithm")
    if "b64" in header:
        raise InvalidDPoPProof("the DPoP proof's payload must be base64url-encoded")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDPoPProof("the DPoP proof must carry its public key in a jwk header")
    if PRIVATE_MEMBERS & jwk.keys() or jwk.get("kty") == "oct":
        raise InvalidDPoPProof("the DPoP proof's jwk must be a public key")
    return alg


def _public_key(jwk: dict[str, Any]) -> Key:
    """Import the header's key; short RSA moduli are refused before joserfc warns of them."""
    if jwk.get("kty") == "RSA":
        n = jwk.get("n")
        try:
            bits = int.from_bytes(_b64decode(n) if isinstance(n, str) else b"", "big")
        except (ValueError, binascii.Error) as exc:
            raise InvalidDPoPProof("the DPoP proof's jwk is not a usable public key") from exc
        if bits.bit_length() < MIN_RSA_BITS:
            raise InvalidDPoPProof("the DPoP proof's RSA key is shorter than 2048 bits")
    try:
        return JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidDPoPProof("the DPoP proof's jwk is not a usable public key") from exc


def _b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class _ProofRegistry(jws.JWSRegistry):
    """joserfc's registry, sized for proofs carrying an RSA `jwk`, and quiet about `EdDSA`.

    joserfc warns on every `EdDSA` use since RFC 9864 deprecated the name for being
    polymorphic; here the curve comes from the key's `crv`, so the warning says nothing.
    Only the algorithms given to the constructor are ever returned.
    """

    max_header_length = MAX_PROOF_LENGTH
    max_payload_length = MAX_PROOF_LENGTH
    max_signature_length = MAX_PROOF_LENGTH

    def get_alg(self, name: str) -> JWSAlgModel:
        if not self.allowed or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


def _verified_claims(proof: str, key: Key, alg: str) -> dict[str, Any]:
    registry = _ProofRegistry(algorithms=[alg], strict_check_header=False)
    try:
        verified = jws.deserialize_compact(proof, key, registry=registry)
        claims = orjson.loads(verified.payload)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidDPoPProof("the DPoP proof's signature does not verify") from exc
    if not isinstance(claims, dict):
        raise InvalidDPoPProof("the DPoP proof's payload must be a JSON object")
    return claims


def _check_claims(
    claims: dict[str, Any], method: str, url: str, now: float, iat_window: int
) -> tuple[str, float, str]:
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise InvalidDPoPProof("the DPoP proof must carry a jti of at most 256 characters")
    if claims.get("htm") != method:
        raise InvalidDPoPProof("the DPoP proof's htm does not match the request method")
    htu = claims.get("htu")
    if not isinstance(htu, str) or not _same_target(htu, canonical_htu(url)):
        raise InvalidDPoPProof("the DPoP proof's htu does not match the request URL")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise InvalidDPoPProof("the DPoP proof must carry a numeric iat")
    if abs(iat - now) > iat_window:
        raise InvalidDPoPProof("the DPoP proof's iat is too old or in the future")
    return jti, iat, htu


def _same_target(htu: str, request_target: str) -> bool:
    try:
        return canonical_htu(htu) == request_target
    except ValueError:
        return False


def _check_ath(ath: Any, access_token: str) -> None:
    try:
        expected = access_token_hash(access_token)
    except ValueError as exc:
        raise InvalidDPoPProof("the access token is not ASCII") from exc
    if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), expected.encode()):
        raise InvalidDPoPProof("the DPoP proof's ath does not match the access token")
