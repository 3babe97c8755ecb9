"""The client side of DPoP (RFC 9449): a proof key per client and the proofs it signs.

With `dpop=True` a client generates an EC P-256 key that lives only in its memory. Every
token request carries a proof, so ValetKey binds the token to the key (`cnf.jkt`); every
request that presents the token carries a fresh proof with `ath`, so a stolen token is
useless without the key. Servers hand out nonces (`DPoP-Nonce`, §8 and §9): the last one
seen from each origin goes into the next proof to that origin.
"""

import secrets
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
from joserfc.jwk import ECKey

from valetkey.sdk import _jose

PROOF_TYP = "dpop+jwt"
NONCE_HEADER = "DPoP-Nonce"


def htu(url: str) -> str:
    """The proof's `htu`: the request URL without query and fragment (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class DPoPKey:
    """An EC P-256 key pair for proofs (ES256), generated in memory and never exported."""

    def __init__(self) -> None:
        self._key = ECKey.generate_key("P-256", private=True)
        self.public_jwk: dict[str, str] = {
            str(k): str(v) for k, v in self._key.as_dict(private=False).items()
        }
        self.jkt = _jose.thumbprint(self._key)  # RFC 7638; a bound token's `cnf.jkt`

    def proof(
        self,
        method: str,
        url: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
    ) -> str:
        """A proof for one request: fresh `jti` and `iat`, `ath` when a token is presented."""
        claims: dict[str, object] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(time.time()),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            claims["ath"] = _jose.access_token_hash(access_token)
        header = {"typ": PROOF_TYP, "alg": "ES256", "jwk": self.public_jwk}
        return _jose.sign(header, claims, self._key)

    def __repr__(self) -> str:
        return f"DPoPKey(jkt={self.jkt!r})"


class NonceBook:
    """The last `DPoP-Nonce` each origin sent; thread-safe, shared by every request."""

    def __init__(self) -> None:
        self._nonces: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> str | None:
        with self._lock:
            return self._nonces.get(origin(url))

    def note(self, url: str, response: httpx.Response) -> str | None:
        """Keep the response's nonce, if it has one; returns it."""
        nonce = response.headers.get(NONCE_HEADER)
        if nonce:
            with self._lock:
                self._nonces[origin(url)] = nonce
        return nonce or None
