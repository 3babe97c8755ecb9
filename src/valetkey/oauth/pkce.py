"""PKCE (RFC 7636), `S256` only.

`plain` sends the verifier itself as the challenge, so anyone who sees the authorization
request can redeem the code: it is refused, and so is a missing method, which RFC 7636 §4.3
defines as `plain`.
"""

import base64
import hashlib
import hmac
import re

from valetkey.oauth.errors import InvalidRequest

VERIFIER_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")  # RFC 7636 §4.1
CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url(SHA-256), no padding
METHOD = "S256"


def check_challenge(challenge: str | None, method: str | None) -> str:
    """The `code_challenge` to store with the authorization code, once it is usable."""
    if not challenge:
        raise InvalidRequest("code_challenge is required (PKCE, S256)")
    if method != METHOD:
        raise InvalidRequest("code_challenge_method must be S256; plain is not supported")
    if not CHALLENGE_RE.fullmatch(challenge):
        raise InvalidRequest("code_challenge must be 43 base64url characters (S256)")
    return challenge


def s256(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(code_verifier))), RFC 7636 §4.2."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str | None, challenge: str) -> bool:
    """Whether the token request's `code_verifier` answers the stored challenge."""
    if verifier is None or not VERIFIER_RE.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier).encode(), challenge.encode())
