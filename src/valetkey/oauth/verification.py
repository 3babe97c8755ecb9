"""Is this one of our access tokens, and does it still stand? Shared by introspection,
revocation and token exchange (a delegated or user token presented as `subject_token`).

A token stands while its signature, issuer and expiry check out, its client is active and
of the same token generation, none of its scopes is blocked, it was not revoked, and — for
a token that names a user — the user is active and, when agents act for them, the consent
behind every actor still holds.
"""

import asyncio
from typing import Any, Protocol

from joserfc.jwk import KeySet

from valetkey.oauth import client_auth
from valetkey.oauth.context import ClientContext, OAuthStore
from valetkey.oauth.keys import KeyManager
from valetkey.oauth.tokens import TokenInvalid, jti_generation, verify_access_token

VERIFIED_CACHE = 8192


class SubjectCheck(Protocol):
    async def subject_live(self, claims: dict[str, Any], now: float) -> bool:
        """The user the token names is active, and every actor's consent still stands."""
        ...


def actors(act: Any) -> list[str]:
    """The actors of a nested `act` claim, newest (outermost) first; [] when malformed."""
    found: list[str] = []
    while act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str):
            return []
        found.append(act["sub"])
        act = act.get("act")
    return found


class LocalTokens:
    def __init__(
        self, store: OAuthStore, keys: KeyManager, issuer: str, subjects: SubjectCheck | None
    ) -> None:
        self._store = store
        self._keys = keys
        self._issuer = issuer
        self._subjects = subjects
        self._key_set: tuple[frozenset[str], KeySet] | None = None
        self._verified: dict[str, dict[str, Any]] = {}
        self._key_lock = asyncio.Lock()

    async def verified(self, token: str, now: float) -> dict[str, Any] | None:
        """Claims of a token signed by us and unexpired (not yet checked for liveness).

        A signature that verified once verifies again: the checked claims are kept per
        token (bounded), which spares an ES256 verification on every call an agent makes
        with the same token. Expiry is checked every time; liveness is the caller's."""
        cached = self._verified.get(token)
        if cached is not None:
            return dict(cached) if cached["exp"] > now else None
        try:
            claims = verify_access_token(token, await self._key_set_for(token), self._issuer, now)
        except TokenInvalid:
            return None
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()  # simplest bound: start over; a miss only costs a verify
        self._verified[token] = claims
        return dict(claims)

    async def live(self, token: str, now: float) -> dict[str, Any] | None:
        found = await self.live_context(token, now)
        return found[0] if found is not None else None

    async def live_context(
        self, token: str, now: float
    ) -> tuple[dict[str, Any], ClientContext] | None:
        """The claims of a token that stands, and its client as just loaded (callers need
        it next, and reading it twice was a round trip per request on PostgreSQL)."""
        claims = await self.verified(token, now)
        if claims is None:
            return None
        holder = await self.standing(claims, now)
        return (claims, holder) if holder is not None else None

    async def standing(self, claims: dict[str, Any], now: float) -> ClientContext | None:
        holder = await self._store.load_client_context(claims["client_id"])
        if holder is None or not holder.client.active or holder.tenant.id != claims["tenant"]:
            return None
        if jti_generation(claims["jti"]) != holder.client.token_generation:
            return None  # issued before a suspension or decommissioning
        if holder.tenant.settings.blocked(str(claims.get("scope", "")).split()):
            return None  # a blocked scope is refused everywhere, tokens already out included
        if await self._store.is_revoked(claims["jti"]):
            return None
        if claims["sub"] == claims["client_id"] and "act" not in claims:
            return holder  # an agent's own token
        if self._subjects is None or not await self._subjects.subject_live(claims, now):
            return None
        return holder

    async def _key_set_for(self, token: str) -> KeySet:
        kid = client_auth.token_kid(token)
        cached = self._key_set
        if cached is not None and kid in cached[0]:
            return cached[1]
        async with self._key_lock:
            jwks = await self._keys.jwks()
            key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            self._key_set = (frozenset(k["kid"] for k in jwks["keys"]), key_set)
            return key_set
