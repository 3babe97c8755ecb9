"""Signing people in through a tenant's trusted issuer (OpenID Connect, authorization code
with PKCE S256, `state` and `nonce`): ValetKey is the relying party here. authlib builds the
authorization URL and redeems the code; the ID token is checked with joserfc against the
issuer's published keys (iss, aud, azp, exp, iat, nonce), and names the user by the claim the
tenant trusts the issuer for — the user must already exist: nobody is created by signing in.
An `email` claim counts only with `email_verified: true`: many IdPs let people type any
address, and the console would otherwise hand the matching account to whoever typed it.
"""

import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.base_client.errors import OAuthError as AuthlibError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from valetkey.identity.models import TrustedIssuer
from valetkey.oauth.client_auth import ASSERTION_ALGORITHMS
from valetkey.oauth.remote_keys import KeyFetchError, RemoteKeySets

LEEWAY = 60
SCOPE = "openid email"
_DISCOVERY_TTL = 300.0


def _secure(url: str) -> bool:
    """https, or http to this very machine (a test or a local IdP): the code and the client
    secret travel to the token endpoint."""
    if url.startswith("https://"):
        return True
    host = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)[0]
    return url.startswith("http://") and host in ("127.0.0.1", "localhost", "[::1]")


class SsoError(Exception):
    """The issuer could not sign this person in; the message is safe to show them."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorization: str
    token: str


class SsoClient:
    def __init__(self, keys: RemoteKeySets, timeout: float = 10.0) -> None:
        self._keys = keys
        self._timeout = timeout
        self._discovered: dict[str, tuple[float, Endpoints]] = {}

    async def endpoints(self, issuer: TrustedIssuer) -> Endpoints:
        """From the issuer's OpenID discovery document, cached for a few minutes."""
        cached = self._discovered.get(issuer.issuer)
        if cached is not None and time.monotonic() - cached[0] < _DISCOVERY_TTL:
            return cached[1]
        url = issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.get(url)
            meta = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            raise SsoError(f"the sign-in service {issuer.issuer} does not answer") from exc
        if not isinstance(meta, dict) or meta.get("issuer") != issuer.issuer:
            raise SsoError(f"the sign-in service {issuer.issuer} is not set up for this")
        found = Endpoints(str(meta.get("authorization_endpoint", "")),
                          str(meta.get("token_endpoint", "")))  # fmt: skip
        if not all(_secure(u) for u in (found.authorization, found.token)):
            raise SsoError(f"the sign-in service {issuer.issuer} publishes no https endpoints")
        self._discovered[issuer.issuer] = (time.monotonic(), found)
        return found

    async def authorization_url(
        self, issuer: TrustedIssuer, redirect_uri: str, state: str, nonce: str, verifier: str
    ) -> str:
        endpoints = await self.endpoints(issuer)
        client = AsyncOAuth2Client(
            issuer.login_client_id, scope=SCOPE, redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )  # fmt: skip
        url, _ = client.create_authorization_url(
            endpoints.authorization, state=state, nonce=nonce, code_verifier=verifier
        )
        return str(url)

    async def finish(
        self, issuer: TrustedIssuer, secret: str, redirect_uri: str, code: str, verifier: str,
        nonce: str,
    ) -> dict[str, Any]:  # fmt: skip
        """Redeem the code and return the ID token's verified claims."""
        endpoints = await self.endpoints(issuer)
        async with AsyncOAuth2Client(
            issuer.login_client_id, secret, scope=SCOPE, redirect_uri=redirect_uri,
            token_endpoint_auth_method="client_secret_basic", timeout=self._timeout,
        ) as client:  # fmt: skip
            try:
                token = await client.fetch_token(
                    endpoints.token, code=code, code_verifier=verifier,
                    grant_type="authorization_code",
                )  # fmt: skip
            except (AuthlibError, httpx.HTTPError, ValueError) as exc:
                raise SsoError("the sign-in service refused the code; sign in again") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SsoError("the sign-in service returned no ID token")
        return await self.verify_id_token(issuer, id_token, nonce)

    async def verify_id_token(
        self, issuer: TrustedIssuer, id_token: str, nonce: str
    ) -> dict[str, Any]:
        try:
            header = extract_compact(id_token.encode()).protected
        except (JoseError, ValueError) as exc:
            raise SsoError("the ID token is not a JWT") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ASSERTION_ALGORITHMS:
            raise SsoError(f"the ID token's algorithm {alg!r} is not allowed")
        try:
            key_set = await self._keys.key_set(
                issuer.jwks_uri, kid if isinstance(kid, str) else None
            )
        except KeyFetchError as exc:
            raise SsoError(f"cannot check the ID token: {exc}") from exc
        claims: dict[str, Any] | None = None
        for key in [k for k in key_set.keys if kid is None or k.kid == kid]:
            try:
                claims = dict(jwt.decode(id_token, key, algorithms=[str(alg)]).claims)
                break
            except (JoseError, ValueError, TypeError):
                continue
        if claims is None:
            raise SsoError("the ID token's signature does not verify")
        now = time.time()
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        exp, iat = claims.get("exp"), claims.get("iat")
        fresh = isinstance(exp, int | float) and exp + LEEWAY > now
        issued = isinstance(iat, int | float) and iat - LEEWAY < now
        checks = (
            (claims.get("iss") == issuer.issuer, "the ID token is from another issuer"),
            (issuer.login_client_id in audiences, "the ID token is for another client"),
            (("azp" not in claims and len(audiences) == 1)
             or claims.get("azp") == issuer.login_client_id,
             "the ID token is for another party"),
            (issuer.claim != "email" or claims.get("email_verified") is True,
             "the issuer has not verified this email address"),
            (fresh, "the ID token has expired"),
            (issued, "the ID token is from the future"),
            (claims.get("nonce") == nonce, "the ID token is not for this sign-in"),
        )  # fmt: skip
        for ok, why in checks:
            if not ok:
                raise SsoError(why)
        return claims
