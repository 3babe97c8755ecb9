"""A DPoP client (RFC 9449) written independently of ValetKey: EC P-256 proof keys, proofs
signed with PyJWT, RFC 7638 thumbprints computed by hand, and the server-nonce dance at the
token endpoint (RFC 9449 §8)."""

import atexit
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.server import RunningServer

TOKEN_PATH = "/oauth/token"
PROOF_TYP = "dpop+jwt"

_http = httpx.Client(timeout=30)
atexit.register(_http.close)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


_REQUIRED_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                     "OKP": ("crv", "kty", "x")}  # fmt: skip


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the key type's required members, sorted, no whitespace."""
    required = {name: jwk[name] for name in _REQUIRED_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass
class ProofKey:
    """A client's DPoP key pair and the proofs it signs."""

    private: ec.EllipticCurvePrivateKey = field(default_factory=_new_key)

    @property
    def public_jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }

    @property
    def private_jwk(self) -> dict[str, str]:
        d = self.private.private_numbers().private_value.to_bytes(32, "big")
        return {**self.public_jwk, "d": b64url(d)}

    @property
    def thumbprint(self) -> str:
        return jwk_thumbprint(self.public_jwk)

    def proof(
        self,
        htu: str,
        *,
        htm: str = "POST",
        nonce: str | None = None,
        claims: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
        signer: ec.EllipticCurvePrivateKey | None = None,
    ) -> str:
        """A proof for one request. `claims`/`header` override the defaults (None removes a
        claim or header); `signer` signs with another key than `jwk`."""
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": htm,
            "htu": htu,
            "iat": int(time.time()),
        }
        if nonce is not None:
            body["nonce"] = nonce
        for name, value in (claims or {}).items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        headers: dict[str, Any] = {"typ": PROOF_TYP, "jwk": self.public_jwk, **(header or {})}
        headers = {k: v for k, v in headers.items() if v is not None or k == "typ"}
        return jwt.encode(body, signer or self.private, algorithm="ES256", headers=headers)


def send(
    server: RunningServer,
    form: dict[str, str],
    auth: tuple[str, str],
    proofs: list[str],
) -> httpx.Response:
    """POST a token request with these DPoP headers (none, one, or repeated)."""
    headers = [("DPoP", proof) for proof in proofs]
    return _http.post(server.base_url + TOKEN_PATH, data=form, auth=auth, headers=headers)


@dataclass
class DPoPClient:
    """One client's DPoP key and the server nonce it last saw at one server."""

    server: RunningServer
    key: ProofKey = field(default_factory=ProofKey)
    nonce: str | None = None

    @property
    def htu(self) -> str:
        return self.server.issuer + TOKEN_PATH

    def proof(self, **kw: Any) -> str:
        kw.setdefault("nonce", self.nonce)
        return self.key.proof(self.htu, **kw)

    def fetch_nonce(self, auth: tuple[str, str]) -> str:
        """Ask without a nonce; the server answers `use_dpop_nonce` with one in `DPoP-Nonce`."""
        form = {"grant_type": "client_credentials"}
        response = send(self.server, form, auth, [self.key.proof(self.htu)])
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "use_dpop_nonce", response.text
        self.nonce = response.headers["DPoP-Nonce"]
        return self.nonce

    def post(self, form: dict[str, str], auth: tuple[str, str], **proof_kw: Any) -> httpx.Response:
        """A token request with a fresh proof; on `use_dpop_nonce`, take the nonce and retry
        once. Every answer's `DPoP-Nonce` becomes the nonce of the next proof."""
        for attempt in (1, 2):
            response = send(self.server, form, auth, [self.proof(**proof_kw)])
            if "DPoP-Nonce" in response.headers:
                self.nonce = response.headers["DPoP-Nonce"]
            retry = response.status_code == 400 and attempt == 1 and "nonce" not in proof_kw
            if retry and response.json().get("error") == "use_dpop_nonce":
                continue
            return response
        raise AssertionError("unreachable")
