"""Client ID metadata documents (MCP authorization, 2026-07-28; draft-ietf-oauth-client-
id-metadata-document): the client id is an https URL, and the JSON document there says
who the client is and where it may be redirected.

Fetching a URL a stranger chose is a server-side request on their behalf, so: https only
(http only for hosts an admin allow-listed, for tests); no private, loopback or
link-local address unless allow-listed (`VALETKEY_FETCH_ALLOW_HOSTS`); no redirects; a
5 s timeout and a 16 KiB cap; the document must name itself (`client_id` equal to the URL)
and hold no secret. A document becomes an agent of the default tenant under an id derived
from its URL — `pending` until an admin approves it, like any self-registered client — and
is cached for five minutes.
"""

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from valetkey.identity.registration import ClientMetadata, RegistrationError, parse_metadata
from valetkey.notify.outbox import destination_allowed

MAX_DOCUMENT = 16 * 1024
TIMEOUT = httpx.Timeout(5.0)
CACHE_SECONDS = 300.0


class ClientDocumentError(Exception):
    """The client id's document cannot be used (`invalid_client` for the caller)."""


def is_document_url(client_id: str) -> bool:
    return client_id.startswith(("https://", "http://"))


def agent_id_for(url: str) -> str:
    """The agent id a metadata-document client gets: stable, and no longer than an id."""
    return "agt_" + hashlib.sha256(url.encode()).hexdigest()[:24]


def _allowed_http(host: str, allow: str) -> bool:
    return host.lower() in {h.strip().lower() for h in allow.split(",") if h.strip()}


def check_url(url: str, allow: str) -> None:
    parts = urlsplit(url)
    if len(url) > 512 or parts.fragment or parts.username or parts.password or not parts.hostname:
        raise ClientDocumentError("the client id is not a usable metadata document URL")
    if parts.scheme != "https" and not (
        parts.scheme == "http" and _allowed_http(parts.hostname, allow)
    ):
        raise ClientDocumentError("a client id URL must be https")
    if not parts.path or parts.path == "/":
        raise ClientDocumentError("a client id URL must have a path")


def parse_document(url: str, data: Any) -> ClientMetadata:
    if not isinstance(data, dict) or data.get("client_id") != url:
        raise ClientDocumentError("the document's client_id is not its own URL")
    if "client_secret" in data or "client_secret_expires_at" in data:
        raise ClientDocumentError("a metadata document must not hold a client secret")
    method = data.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise ClientDocumentError("metadata document clients are public (auth method none)")
    try:
        return parse_metadata({**data, "token_endpoint_auth_method": "none"})
    except RegistrationError as exc:
        raise ClientDocumentError(exc.description) from exc


Register = Callable[[str, ClientMetadata], Awaitable[str]]


class ClientDocuments:
    """Resolves a metadata-document client id to its agent, fetching (and registering)
    when the cached copy is missing or stale."""

    def __init__(self, allow_hosts: str, register: Register) -> None:
        self._allow = allow_hosts
        self._register = register
        self._cache: dict[str, tuple[float, str]] = {}

    async def resolve(self, url: str) -> str:
        """The agent id for `url`, after fetching and (re-)registering its document."""
        found = self._cache.get(url)
        if found is not None and found[0] > time.monotonic():
            return found[1]
        meta = parse_document(url, await self._fetch(url))
        agent_id = await self._register(url, meta)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[url] = (time.monotonic() + CACHE_SECONDS, agent_id)
        return agent_id

    async def _fetch(self, url: str) -> Any:
        check_url(url, self._allow)
        if not await destination_allowed(url, self._allow):
            raise ClientDocumentError("the client id URL points to a private address")
        try:
            async with (
                httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as http,
                http.stream("GET", url, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise ClientDocumentError(
                        f"the client id URL answered {response.status_code}, not the document"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT:
                        raise ClientDocumentError("the metadata document is too large")
        except httpx.HTTPError as exc:
            raise ClientDocumentError(f"the client id URL could not be fetched: {exc}") from exc
        try:
            return orjson.loads(bytes(body))
        except orjson.JSONDecodeError as exc:
            raise ClientDocumentError("the metadata document is not JSON") from exc
