"""The agent's token cache: one token per (resource, scope), refreshed in the background
once `refresh_ratio` of its life has passed, and one token request however many callers
need it at once (single-flight: a `threading.Lock` per key in `TokenCache`, an
`asyncio.Lock` per key in `AsyncTokenCache`).

The refresh is triggered by use, never by a timer: the first caller in a token's refresh
window gets the cached token at once and starts one background request; callers after the
token's end of use wait for a new one. An idle agent so leaves no stream of unused tokens
in ValetKey's audit log, and a bad `expires_in` cannot make anything loop.

Both caches also send the uncached token requests (token exchange): discovery of the token
endpoint (once) and the DPoP nonce round trip live here.
"""

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from valetkey.sdk._core import Cached, CacheKey, Core, schedule
from valetkey.sdk.correlation import HEADER as CORRELATION_HEADER
from valetkey.sdk.models import AccessToken

log = logging.getLogger("valetkey.sdk")


class _Slot:
    """One cached token and the lock its token requests take turns on (threads)."""

    __slots__ = ("cached", "guard", "lock", "refreshing")

    def __init__(self) -> None:
        self.cached: Cached | None = None
        self.lock = threading.Lock()  # held while a token request for this key is out
        self.guard = threading.Lock()  # protects `refreshing`
        self.refreshing = False


class _AsyncSlot:
    """The same for one event loop."""

    __slots__ = ("cached", "lock", "refreshing")

    def __init__(self) -> None:
        self.cached: Cached | None = None
        self.lock = asyncio.Lock()
        self.refreshing = False


class TokenCache:
    """The cache of an `AgentClient` (threads)."""

    def __init__(self, core: Core, http: httpx.Client) -> None:
        self._core = core
        self._http = http
        self._slots: dict[CacheKey, _Slot] = {}
        self._slots_lock = threading.Lock()
        self._metadata_lock = threading.Lock()

    def request(
        self, form: Mapping[str, str], resource: str | None, cid: str
    ) -> tuple[AccessToken, Any]:
        """One token request (uncached): the token and its raw `expires_in`."""
        endpoint = self._endpoint(cid)
        for attempt in (1, 2):  # the second only when the server asked for a DPoP nonce
            headers, body = self._core.token_request(endpoint, form, cid)
            response = self._http.post(endpoint, data=body, headers=headers)
            if self._core.wants_nonce(endpoint, response) and attempt == 1:
                continue
            break
        return Core.token_from(response, resource)

    def get(self, key: CacheKey, cid: str) -> AccessToken:
        slot = self._slot(key)
        cached = slot.cached
        now = time.monotonic()
        if cached is not None and cached.usable(now):
            if not cached.fresh(now):
                self._refresh_in_background(key, slot, cid)
            return cached.token
        with slot.lock:  # one request; every thread waiting here gets its answer
            cached = slot.cached
            if cached is not None and cached.usable(time.monotonic()):
                return cached.token
            return self._fetch(key, slot, cid)

    def renew(self, key: CacheKey, stale: AccessToken, cid: str) -> AccessToken:
        """After a 401: a new token, unless another thread already replaced `stale`."""
        slot = self._slot(key)
        with slot.lock:
            cached = slot.cached
            replaced = cached is not None and cached.token.value != stale.value
            if cached is not None and replaced and cached.usable(time.monotonic()):
                return cached.token
            slot.cached = None
            return self._fetch(key, slot, cid)

    def _endpoint(self, cid: str) -> str:
        if self._core.token_endpoint is not None:
            return self._core.token_endpoint
        with self._metadata_lock:
            if self._core.token_endpoint is None:
                response = self._http.get(self._core.metadata_url,
                                          headers={CORRELATION_HEADER: cid})  # fmt: skip
                self._core.accept_metadata(response)
            assert self._core.token_endpoint is not None
            return self._core.token_endpoint

    def _slot(self, key: CacheKey) -> _Slot:
        with self._slots_lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            return slot

    def _fetch(self, key: CacheKey, slot: _Slot, cid: str) -> AccessToken:
        """A new token into the slot; the caller holds the slot's lock."""
        started = time.monotonic()
        token, expires_in = self.request(Core.client_credentials_form(key), key[0], cid)
        slot.cached = schedule(token, expires_in, started, self._core.refresh_ratio)
        return token

    def _refresh_in_background(self, key: CacheKey, slot: _Slot, cid: str) -> None:
        with slot.guard:
            if slot.refreshing:
                return
            slot.refreshing = True
        context = contextvars.copy_context()  # the caller's correlation id, as in asyncio
        thread = threading.Thread(
            target=context.run, args=(self._background, key, slot, cid),
            name="valetkey-token-refresh", daemon=True,
        )  # fmt: skip
        thread.start()

    def _background(self, key: CacheKey, slot: _Slot, cid: str) -> None:
        try:
            with slot.lock:
                cached = slot.cached
                if cached is None or not cached.fresh(time.monotonic()):
                    self._fetch(key, slot, cid)
        except Exception as exc:  # the cached token still works; a caller past it sees why
            log.warning("background token refresh failed: %s: %s", type(exc).__name__, exc)
        finally:
            with slot.guard:
                slot.refreshing = False


class AsyncTokenCache:
    """The cache of an `AsyncAgentClient` (one event loop)."""

    def __init__(self, core: Core, http: httpx.AsyncClient) -> None:
        self._core = core
        self._http = http
        self._slots: dict[CacheKey, _AsyncSlot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._metadata_lock = asyncio.Lock()

    async def request(
        self, form: Mapping[str, str], resource: str | None, cid: str
    ) -> tuple[AccessToken, Any]:
        endpoint = await self._endpoint(cid)
        for attempt in (1, 2):  # the second only when the server asked for a DPoP nonce
            headers, body = self._core.token_request(endpoint, form, cid)
            response = await self._http.post(endpoint, data=body, headers=headers)
            if self._core.wants_nonce(endpoint, response) and attempt == 1:
                continue
            break
        return Core.token_from(response, resource)

    async def get(self, key: CacheKey, cid: str) -> AccessToken:
        slot = self._slot(key)
        cached = slot.cached
        now = time.monotonic()
        if cached is not None and cached.usable(now):
            if not cached.fresh(now):
                self._refresh_in_background(key, slot, cid)
            return cached.token
        async with slot.lock:  # one request; every task waiting here gets its answer
            cached = slot.cached
            if cached is not None and cached.usable(time.monotonic()):
                return cached.token
            return await self._fetch(key, slot, cid)

    async def renew(self, key: CacheKey, stale: AccessToken, cid: str) -> AccessToken:
        slot = self._slot(key)
        async with slot.lock:
            cached = slot.cached
            replaced = cached is not None and cached.token.value != stale.value
            if cached is not None and replaced and cached.usable(time.monotonic()):
                return cached.token
            slot.cached = None
            return await self._fetch(key, slot, cid)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _endpoint(self, cid: str) -> str:
        if self._core.token_endpoint is not None:
            return self._core.token_endpoint
        async with self._metadata_lock:
            if self._core.token_endpoint is None:
                response = await self._http.get(self._core.metadata_url,
                                                headers={CORRELATION_HEADER: cid})  # fmt: skip
                self._core.accept_metadata(response)
            assert self._core.token_endpoint is not None
            return self._core.token_endpoint

    def _slot(self, key: CacheKey) -> _AsyncSlot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _AsyncSlot()
        return slot

    async def _fetch(self, key: CacheKey, slot: _AsyncSlot, cid: str) -> AccessToken:
        started = time.monotonic()
        token, expires_in = await self.request(Core.client_credentials_form(key), key[0], cid)
        slot.cached = schedule(token, expires_in, started, self._core.refresh_ratio)
        return token

    def _refresh_in_background(self, key: CacheKey, slot: _AsyncSlot, cid: str) -> None:
        if slot.refreshing:
            return
        slot.refreshing = True
        task = asyncio.get_running_loop().create_task(self._background(key, slot, cid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, key: CacheKey, slot: _AsyncSlot, cid: str) -> None:
        try:
            async with slot.lock:
                cached = slot.cached
                if cached is None or not cached.fresh(time.monotonic()):
                    await self._fetch(key, slot, cid)
        except Exception as exc:  # the cached token still works; a caller past it sees why
            log.warning("background token refresh failed: %s: %s", type(exc).__name__, exc)
        finally:
            slot.refreshing = False


class CacheSource:
    """A `TokenCache` key as `AgentAuth` asks for tokens."""

    def __init__(self, cache: TokenCache, key: CacheKey) -> None:
        self._cache = cache
        self._key = key

    def get(self, cid: str) -> AccessToken:
        return self._cache.get(self._key, cid)

    def renew(self, stale: AccessToken, cid: str) -> AccessToken | None:
        return self._cache.renew(self._key, stale, cid)


class AsyncCacheSource:
    """An `AsyncTokenCache` key as `AgentAuth` asks for tokens."""

    def __init__(self, cache: AsyncTokenCache, key: CacheKey) -> None:
        self._cache = cache
        self._key = key

    async def get(self, cid: str) -> AccessToken:
        return await self._cache.get(self._key, cid)

    async def renew(self, stale: AccessToken, cid: str) -> AccessToken | None:
        return await self._cache.renew(self._key, stale, cid)
