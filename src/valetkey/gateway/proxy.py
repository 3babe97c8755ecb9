"""The gateway's forwarding half: what crosses to the platform and what comes back.

The agent's own credentials (`Authorization`, `DPoP`, cookies) and ValetKey's control
headers never reach the platform; the platform's cookies never reach the agent. The
platform sees its own token, `X-Agent-Id` and `X-Correlation-Id`. Redirects are never
followed: a `Location` under the API base is rewritten to the gateway's own URL, any other
is passed back untouched for the agent to judge (it holds no platform token to send).

The HTTP client is aiohttp's: on the forwarding path it measured 4-5x httpx's throughput
at concurrency 16 on these machines (DESIGN.md, "Measured facts"; encode/httpx#3215).
"""

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp

from valetkey.vault.providers import METHOD_CLASSES, ProviderError

BUFFER_LIMIT = 256 * 1024  # bodies up to this size with a known length go back in one piece
SANITIZE_LIMIT = 8 * 1024 * 1024
CHUNK = 64 * 1024
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_NEVER_FORWARDED = _HOP_BY_HOP | {
    "authorization",
    "dpop",
    "cookie",
    "x-agent-id",
    "x-correlation-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-valetkey-action",
    "x-valetkey-resource",
    "x-valetkey-approval",
}
_NEVER_RETURNED = _HOP_BY_HOP | {"set-cookie", "set-cookie2", "www-authenticate"}


class UpstreamError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def outbound_headers(
    headers: Iterable[tuple[bytes, bytes]], token: str, token_type: str, agent_id: str, cid: str
) -> list[tuple[str, str]]:
    """The request's headers as the platform gets them."""
    kept = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers
        if name.decode("latin-1").lower() not in _NEVER_FORWARDED
    ]
    scheme = "Bearer" if token_type.lower() == "bearer" else token_type
    kept += [
        ("Authorization", f"{scheme} {token}"),
        ("X-Agent-Id", agent_id),
        ("X-Correlation-Id", cid),
    ]
    return kept


def returned_headers(
    headers: Iterable[tuple[str, str]], *, api_base: str, gateway_base: str, upstream_url: str
) -> list[tuple[bytes, bytes]]:
    """The platform's response headers as the agent gets them."""
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in _NEVER_RETURNED:
            continue
        if lower in ("location", "content-location"):
            value = rewrite_location(value, api_base, gateway_base, upstream_url)
        out.append((lower.encode("latin-1"), value.encode("latin-1")))
    return out


def rewrite_location(value: str, api_base: str, gateway_base: str, upstream_url: str) -> str:
    target = urljoin(upstream_url, value)
    if target == api_base or target.startswith(api_base + "/"):
        return gateway_base + target[len(api_base) :]
    return value


def method_class(method: str) -> str:
    klass = METHOD_CLASSES.get(method)
    if klass is None:
        raise ProviderError(f"method {method!r} is not allowed through the gateway")
    return klass


@dataclass
class Upstream:
    """A platform response whose body is read either whole or in chunks."""

    status: int
    headers: list[tuple[str, str]]
    response: aiohttp.ClientResponse

    @property
    def length(self) -> int | None:
        return self.response.content_length

    async def read(self, limit: int) -> bytes | None:
        """The whole body, or None when it is larger than `limit`."""
        body = bytearray()
        async for chunk in self.response.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.content.iter_chunked(CHUNK):
            yield chunk

    def close(self) -> None:
        self.response.release()


class Forwarder:
    """One pooled aiohttp session per process, opened on first use inside the loop."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=512, limit_per_host=128, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> Upstream:
        try:
            response = await self._client().request(
                method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamError(
                504, "platform_timeout", "the platform did not answer in time"
            ) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                502,
                "platform_unreachable",
                f"the platform could not be reached: {type(exc).__name__}",
            ) from exc
        return Upstream(response.status, list(response.headers.items()), response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)  # let the connector close its transports
