"""`TokenVerifier`: how a resource server checks ValetKey's access tokens, offline.

RFC 9068 JWTs are checked against the issuer's published keys (RFC 7517), fetched from the
`jwks_uri` of its metadata (RFC 8414) and cached; a token signed with a key not yet seen
triggers one refetch (at most every `min_refetch_interval` seconds, so forged `kid`s cannot
turn the verifier into a flood against the issuer). Then: `typ: at+jwt` (RFC 9068 §4, so an
ID token or a client assertion is never taken for an access token), an allowed asymmetric
`alg` (never `none`, never HMAC), the signature, `iss`, `aud`, `exp`/`nbf`/`iat` within
`leeway`, and for DPoP-bound tokens (`cnf.jkt`) a valid proof (RFC 9449 §7.1).

What it cannot see offline: a token revoked before it expires, or an agent suspended a
minute ago. ValetKey's tokens are short for that reason; when a call must know *now*, ask
introspection (RFC 7662) or the decision point (`AuthZenClient`).
"""

import asyncio
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc.jwk import Key

from valetkey.sdk import _jose
from valetkey.sdk.errors import InvalidToken, SDKError
from valetkey.sdk.proofs import ReplayCache, verify_proof

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
METADATA_PATH = "/.well-known/oauth-authorization-server"
MAX_JWKS_BYTES = 256 * 1024
log = logging.getLogger("valetkey.sdk")


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every check. It never holds the token itself."""

    claims: Mapping[str, Any] = field(repr=False)
    sub: str
    client_id: str
    scopes: tuple[str, ...]
    act: list[str]  # the actors, newest first: [sub-agent, agent] for a chain; [] if none
    cnf: Mapping[str, Any] | None
    jti: str
    expires_at: float
    audience: tuple[str, ...]
    tenant: str | None = None

    @property
    def on_behalf_of_user(self) -> bool:
        """True when an agent acts for the user in `sub` (a delegated token)."""
        return bool(self.act)

    @property
    def agent_id(self) -> str:
        """The agent that presents the token (the outermost actor, else the client)."""
        return self.act[0] if self.act else self.client_id

    @property
    def dpop_bound(self) -> bool:
        return self.cnf is not None and "jkt" in self.cnf

    @property
    def mandate(self) -> Mapping[str, Any] | None:
        """The task's mandate (RFC 9396 detail of type `mandate`), when the token has one."""
        for detail in self.claims.get("authorization_details") or ():
            if isinstance(detail, Mapping) and detail.get("type") == "mandate":
                return detail
        return None

    def has_scopes(self, *scopes: str) -> bool:
        """Whether the token lists every one of `scopes` (exact names: a resource that
        treats `deals:admin` as implying `deals:read` says so itself)."""
        return set(scopes) <= set(self.scopes)


class TokenVerifier:
    """Verifies ValetKey access tokens for one resource server (`audience`).

    `jwks_uri` skips discovery; `leeway` (seconds) absorbs clock skew on `exp`, `nbf`,
    `iat`; `algorithms` are the signature algorithms accepted (asymmetric only);
    `dpop_max_age` how old a DPoP proof's `iat` may be. Safe to share between threads."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_uri: str | None = None,
        leeway: int = 30,
        algorithms: Iterable[str] = ("ES256", "EdDSA"),
        dpop_max_age: int = 60,
        jwks_ttl: float = 300.0,
        min_refetch_interval: float = 10.0,
        timeout: float = 10.0,
        verify: Any = True,
    ) -> None:
        allowed = tuple(algorithms)
        refused = [a for a in allowed if a not in _jose.ASYMMETRIC]
        if refused or not allowed:
            raise ValueError(f"only asymmetric algorithms can verify tokens, not {refused}")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        self.algorithms = allowed
        self._jwks_uri = jwks_uri
        self._dpop_max_age = dpop_max_age
        self._ttl = jwks_ttl
        self._min_interval = min_refetch_interval
        self._http_options: dict[str, Any] = {"timeout": timeout, "verify": verify,
                                              "follow_redirects": False}  # fmt: skip
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None  # monotonic; None: never
        self._attempted_at: float | None = None
        self._fetches = 0
        self._state = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._replays = ReplayCache()

    @property
    def jwks_fetches(self) -> int:
        """How many times the key set was fetched (for monitoring)."""
        return self._fetches

    def verify(
        self,
        token: str,
        dpop: str | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> VerifiedToken:
        """Check `token`; pass the request's `DPoP` header, method and full URL whenever the
        request has a proof. Raises `InvalidToken`; `SDKError` when the issuer's keys
        cannot be fetched. May fetch the key set (blocking): in async code use `averify`."""
        alg, kid = self._header(token)
        key = self._cached_key(kid)
        if key is None:
            with self._fetch_lock:
                key = self._cached_key(kid)
                if key is None and self._may_fetch():
                    try:
                        self._accept(self._fetch_sync())
                    except SDKError:
                        if self._known_key(kid) is None:
                            raise
                        log.warning("the issuer's keys could not be refreshed; using cached ones")
                    key = self._known_key(kid)
        return self._finish(token, alg, key, dpop, method, url)

    async def averify(
        self,
        token: str,
        dpop: str | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> VerifiedToken:
        """`verify` for async code: the key set is fetched without blocking the loop."""
        alg, kid = self._header(token)
        key = self._cached_key(kid)
        if key is None:
            async with self._async_lock():
                key = self._cached_key(kid)
                if key is None and self._may_fetch():
                    try:
                        self._accept(await self._fetch_async())
                    except SDKError:
                        if self._known_key(kid) is None:
                            raise
                        log.warning("the issuer's keys could not be refreshed; using cached ones")
                    key = self._known_key(kid)
        return self._finish(token, alg, key, dpop, method, url)

    # keys --------------------------------------------------------------------------------
    def _cached_key(self, kid: str) -> Key | None:
        """The key for `kid` from a key set fetched less than `jwks_ttl` ago."""
        with self._state:
            if self._fetched_at is None or time.monotonic() - self._fetched_at > self._ttl:
                return None
            return self._keys.get(kid)

    def _known_key(self, kid: str) -> Key | None:
        """The key for `kid` from the last key set fetched, however old."""
        with self._state:
            return self._keys.get(kid)

    def _may_fetch(self) -> bool:
        """At most one attempt per `min_refetch_interval`, successful or not; takes the slot."""
        with self._state:
            now = time.monotonic()
            if self._attempted_at is not None and now - self._attempted_at < self._min_interval:
                return False
            self._attempted_at = now
            return True

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = self._async_locks[loop] = asyncio.Lock()
            return lock

    def _fetch_sync(self) -> httpx.Response:
        try:
            with httpx.Client(**self._http_options) as http:
                if self._jwks_uri is None:
                    self._jwks_uri = self._jwks_uri_from(http.get(self.issuer + METADATA_PATH))
                return http.get(self._jwks_uri)
        except httpx.HTTPError as exc:
            raise SDKError(f"cannot fetch the issuer's keys: {type(exc).__name__}") from exc

    async def _fetch_async(self) -> httpx.Response:
        try:
            async with httpx.AsyncClient(**self._http_options) as http:
                if self._jwks_uri is None:
                    metadata = await http.get(self.issuer + METADATA_PATH)
                    self._jwks_uri = self._jwks_uri_from(metadata)
                return await http.get(self._jwks_uri)
        except httpx.HTTPError as exc:
            raise SDKError(f"cannot fetch the issuer's keys: {type(exc).__name__}") from exc

    def _jwks_uri_from(self, response: httpx.Response) -> str:
        body = _json(response, "the issuer's metadata")
        if body.get("issuer") != self.issuer:
            raise SDKError(f"the metadata's issuer is {body.get('issuer')!r}, not {self.issuer!r}")
        uri = body.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise SDKError("the issuer's metadata names no jwks_uri")
        return uri

    def _accept(self, response: httpx.Response) -> None:
        body = _json(response, "the issuer's key set")
        keys: dict[str, Key] = {}
        for jwk in body.get("keys") or ():
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[jwk["kid"]] = _jose.import_public_jwk(jwk)
            except ValueError:
                continue  # one unusable key must not take the others down
        with self._state:
            self._keys = keys
            self._fetched_at = time.monotonic()
            self._fetches += 1

    # checks ------------------------------------------------------------------------------
    def _header(self, token: str) -> tuple[str, str]:
        if not isinstance(token, str) or not token:
            raise InvalidToken("invalid_token", "no token")
        try:
            header = _jose.unverified_header(token)
        except ValueError as exc:
            raise InvalidToken("invalid_token", "the token is not a JWT") from exc
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidToken("invalid_token", "the token is not an access token (typ)")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken("invalid_token", f"the algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("invalid_token", "the token names no key (kid)")
        return alg, kid

    def _finish(
        self,
        token: str,
        alg: str,
        key: Key | None,
        dpop: str | None,
        method: str | None,
        url: str | None,
    ) -> VerifiedToken:
        if key is None:
            raise InvalidToken("invalid_token", "the token is not signed by a key of the issuer")
        try:
            claims = _jose.verified_payload(token, key, alg)
        except ValueError as exc:
            raise InvalidToken("invalid_token", "the token's signature does not verify") from exc
        now = time.time()
        verified = self._claims(claims, now)
        jkt = verified.cnf.get("jkt") if verified.cnf is not None else None
        if jkt is not None:
            if not isinstance(jkt, str):
                raise InvalidToken("invalid_token", "the token's cnf.jkt is malformed")
            if dpop is None:
                raise InvalidToken("invalid_token",
                                   "a DPoP-bound token needs the DPoP scheme and a proof",
                                   scheme="DPoP")  # fmt: skip
            if method is None or url is None:
                raise ValueError("verifying a DPoP proof needs the request's method and url")
            verify_proof(dpop, token=token, jkt=jkt, method=method, url=url, now=now,
                         replays=self._replays, max_age=self._dpop_max_age,
                         leeway=min(self.leeway, 5))  # fmt: skip
        elif dpop is not None:
            raise InvalidToken("invalid_token", "the token is not DPoP-bound")
        return verified

    def _claims(self, claims: dict[str, Any], now: float) -> VerifiedToken:
        if claims.get("iss") != self.issuer:
            raise InvalidToken("invalid_token", "the token is from another issuer")
        aud = claims.get("aud")
        audience = (aud,) if isinstance(aud, str) else tuple(aud) if isinstance(aud, list) else ()
        if self.audience not in audience:
            raise InvalidToken("invalid_token", "the token is for another audience")
        exp, iat, nbf = (
            _number(claims.get("exp")),
            _number(claims.get("iat")),
            _number(claims.get("nbf", 0)),
        )
        if exp is None or iat is None or nbf is None:
            raise InvalidToken("invalid_token", "the token's exp, iat or nbf is malformed")
        if exp + self.leeway <= now:
            raise InvalidToken("invalid_token", "the token has expired")
        if nbf - self.leeway > now or iat - self.leeway > now:
            raise InvalidToken("invalid_token", "the token is not valid yet")
        names = ("sub", "client_id", "jti")
        if not all(isinstance(claims.get(n), str) and claims[n] for n in names):
            raise InvalidToken("invalid_token", "the token lacks sub, client_id or jti")
        scope, cnf, tenant = claims.get("scope", ""), claims.get("cnf"), claims.get("tenant")
        if not isinstance(scope, str) or (cnf is not None and not isinstance(cnf, dict)):
            raise InvalidToken("invalid_token", "the token's scope or cnf is malformed")
        return VerifiedToken(
            claims=claims,
            sub=claims["sub"],
            client_id=claims["client_id"],
            scopes=tuple(scope.split()),
            act=_actors(claims.get("act")),
            cnf=cnf,
            jti=claims["jti"],
            expires_at=exp,
            audience=tuple(str(a) for a in audience),
            tenant=tenant if isinstance(tenant, str) else None,
        )


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _actors(act: Any) -> list[str]:
    """The nested `act` claim (RFC 8693 §4.1) as a list, newest (outermost) actor first."""
    found: list[str] = []
    while act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str) or len(found) > 16:
            raise InvalidToken("invalid_token", "the token's act claim is malformed")
        found.append(act["sub"])
        act = act.get("act")
    return found


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise SDKError(f"{what} answered HTTP {response.status_code}")
    if len(response.content) > MAX_JWKS_BYTES:
        raise SDKError(f"{what} is larger than {MAX_JWKS_BYTES} bytes")
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise SDKError(f"{what} is not JSON") from exc
    if not isinstance(body, dict):
        raise SDKError(f"{what} is not a JSON object")
    return body
