"""Key sets of trusted issuers (company IdPs), fetched only from the URI an admin configured.

Timeouts, a size cap, no redirects; cached, and refreshed when an assertion names a `kid`
the cached set lacks (at most once per `min_refresh` seconds per URI, so a stream of
garbage `kid`s cannot turn into a stream of fetches). Takes an httpx transport, so tests
can drive real servers and unit tests a `MockTransport`.
"""

import asyncio
from typing import Any

import httpx
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from valetkey.clock import Clock


class KeyFetchError(Exception):
    """The issuer's key set could not be fetched or parsed."""


class RemoteKeySets:
    def __init__(
        self,
        clock: Clock,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        ttl: float = 300.0,
        min_refresh: float = 10.0,
        timeout: float = 5.0,
        max_bytes: int = 256 * 1024,
    ) -> None:
        self._clock = clock
        self._transport = transport
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._cache: dict[str, tuple[float, KeySet, frozenset[str | None]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def key_set(self, uri: str, kid: str | None) -> KeySet:
        now = self._clock.now()
        cached = self._cache.get(uri)
        if cached is not None:
            fetched_at, keys, kids = cached
            fresh = now - fetched_at < self._ttl
            if fresh and (kid in kids or now - fetched_at < self._min_refresh):
                return keys
        async with self._locks.setdefault(uri, asyncio.Lock()):
            cached = self._cache.get(uri)
            if cached is not None and self._clock.now() - cached[0] < self._min_refresh:
                return cached[1]
            keys, kids = await self._fetch(uri)
            self._cache[uri] = (self._clock.now(), keys, kids)
            return keys

    async def _fetch(self, uri: str) -> tuple[KeySet, frozenset[str | None]]:
        try:
            async with (
                httpx.AsyncClient(
                    transport=self._transport, timeout=self._timeout, follow_redirects=False
                ) as client,
                client.stream("GET", uri, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise KeyFetchError(f"JWKS answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise KeyFetchError("JWKS larger than the size cap")
        except httpx.HTTPError as exc:
            raise KeyFetchError(f"JWKS fetch failed: {exc.__class__.__name__}") from exc
        try:
            data: Any = orjson.loads(bytes(body))
            public = [
                k
                for k in data["keys"]
                if isinstance(k, dict) and k.get("kty") in ("EC", "RSA", "OKP") and "d" not in k
            ]
            keys = KeySet.import_key_set({"keys": public})
        except (orjson.JSONDecodeError, JoseError, KeyError, TypeError, ValueError) as exc:
            raise KeyFetchError("JWKS is not a JSON Web Key Set") from exc
        return keys, frozenset(k.kid for k in keys.keys)
