"""Small JOSE helpers on joserfc: compact JWS signing and verification with an explicit
algorithm allow-list, base64url, RFC 7638 thumbprints and DPoP's `ath`.

joserfc warns on every use of `EdDSA` since RFC 9864 deprecated the name for being
polymorphic; ValetKey's Ed25519 keys name their curve in `crv`, so the registry below keeps
the allow-list strict and the warning quiet.
"""

import base64
import binascii
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jws
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, JWKRegistry, Key, OKPKey, RSAKey

MAX_JWS_LENGTH = 64 * 1024
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# Asymmetric only: never `none`, never HMAC (a public key is not a shared secret).
ASYMMETRIC = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
     "Ed25519"}
)  # fmt: skip
_CURVE_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class _Registry(jws.JWSRegistry):
    """Only the algorithms given are ever returned; no deprecation warning for `EdDSA`."""

    max_header_length = 8192  # a DPoP proof's `jwk` may be a 4096-bit RSA key
    max_payload_length = MAX_JWS_LENGTH
    max_signature_length = 1024

    def get_alg(self, name: str) -> JWSAlgModel:
        if not self.allowed or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64_std(data: bytes) -> str:
    """Standard base64 with padding (HTTP Basic credentials)."""
    return base64.b64encode(data).decode("ascii")


def b64url_decode(value: str) -> bytes:
    """Strict base64url without padding; ValueError otherwise."""
    if not value.isascii() or "=" in value:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def sign(header: dict[str, Any], claims: dict[str, Any], key: Key) -> str:
    """A compact JWS of `claims` (JSON) with exactly `header["alg"]`."""
    payload = json.dumps(claims, separators=(",", ":")).encode()
    registry = _Registry(algorithms=[header["alg"]], strict_check_header=False)
    return jws.serialize_compact(header, payload, key, registry=registry)


def unverified_header(token: str) -> dict[str, Any]:
    """The protected header of a compact JWS, before any check; ValueError if malformed."""
    if len(token) > MAX_JWS_LENGTH or not token.isascii():
        raise ValueError("not a compact JWS")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError("not a compact JWS")
    header = _json(parts[0])
    if not isinstance(header, dict):
        raise ValueError("the JWS header is not a JSON object")
    return header


def verified_payload(token: str, key: Key, alg: str) -> dict[str, Any]:
    """Verify the signature with `key` and exactly `alg`; the payload as a JSON object.
    ValueError on any failure."""
    registry = _Registry(algorithms=[alg], strict_check_header=False)
    try:
        verified = jws.deserialize_compact(token, key, registry=registry)
        payload = json.loads(verified.payload)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError("the signature does not verify") from exc
    if not isinstance(payload, dict):
        raise ValueError("the JWS payload is not a JSON object")
    return payload


def import_public_jwk(jwk: dict[str, Any]) -> Key:
    """A public key from a JWK; refuses private or symmetric keys. ValueError otherwise."""
    if PRIVATE_MEMBERS & jwk.keys() or jwk.get("kty") == "oct":
        raise ValueError("not a public key")
    if jwk.get("kty") == "RSA":
        n = jwk.get("n")
        if not isinstance(n, str) or len(b64url_decode(n)) * 8 < 2048:  # RFC 7518 §3.3
            raise ValueError("RSA keys must have at least 2048 bits")
    try:
        return JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError("not a usable JWK") from exc


def thumbprint(key: Key) -> str:
    """RFC 7638 SHA-256 thumbprint (what `cnf.jkt` holds)."""
    return key.thumbprint()


def access_token_hash(token: str) -> str:
    """DPoP `ath` (RFC 9449 §4.2): base64url(SHA-256(ASCII(token)))."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def load_private_key(pem: str | bytes) -> tuple[Key, str]:
    """A PEM private key for `private_key_jwt`, and the algorithm it signs with: ES256/384/512
    by curve, PS256 for RSA, EdDSA for Ed25519. ValueError for anything else."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("private_key must be an unencrypted PEM private key") from exc
    if isinstance(loaded, ec.EllipticCurvePrivateKey):
        alg = _CURVE_ALG.get(loaded.curve.name)
        if alg is None:
            raise ValueError(f"unsupported curve {loaded.curve.name}")
        return ECKey.import_key(data), alg
    if isinstance(loaded, rsa.RSAPrivateKey):
        if loaded.key_size < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
        return RSAKey.import_key(data), "PS256"
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        return OKPKey.import_key(data), "EdDSA"
    raise ValueError("private_key must be an EC (P-256/384/521), RSA or Ed25519 key")


def _json(segment: str) -> Any:
    return json.loads(b64url_decode(segment))
