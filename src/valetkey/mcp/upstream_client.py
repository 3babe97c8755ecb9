"""ValetKey as an MCP client of an upstream: the official SDK's streamable-HTTP client, one
short connection per operation (the credential is per caller and rotates), bounded by the
gateway timeout.

The era an upstream speaks (the 2026-07-28 per-request protocol, or the initialize
handshake) is probed once per URL and remembered, so later connections skip the probe; a
failure forgets it and the next connection probes again. Redirects are followed only
within the upstream's origin (the SDK's rule)."""

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

MAX_PAGES = 20  # tools/list pages per upstream (a paginator that never ends cannot hang us)


class UpstreamClient:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._eras: dict[str, tuple[str, types.DiscoverResult | None]] = {}
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        """One TLS context per process: building one loads the CA bundle, ~27 ms of CPU,
        which every call paid when each connection built its own (bench/mcp.py)."""
        if self._tls is None:
            self._tls = httpx2.create_ssl_context()
        return self._tls

    @asynccontextmanager
    async def _open(
        self, url: str, headers: Mapping[str, str], auth: httpx2.Auth | None
    ) -> AsyncIterator[Client]:
        mode, prior = self._eras.get(url, ("auto", None))
        async with httpx2.AsyncClient(
            headers=dict(headers), auth=auth, timeout=httpx2.Timeout(self._timeout),
            verify=self._tls_context(),
        ) as http:  # fmt: skip
            client = Client(
                streamable_http_client(url, http_client=http), mode=mode, prior_discover=prior,
                cache=None, read_timeout_seconds=self._timeout,
            )  # fmt: skip
            try:
                async with client:
                    session = client.session
                    discovered = session.discover_result
                    self._eras[url] = (
                        (client.protocol_version, discovered) if discovered else ("legacy", None)
                    )
                    yield client
            except BaseException:
                self._eras.pop(url, None)  # probe again next time
                raise

    async def list_tools(
        self, url: str, headers: Mapping[str, str], auth: httpx2.Auth | None
    ) -> list[types.Tool]:
        tools: list[types.Tool] = []
        with anyio.fail_after(self._timeout):
            async with self._open(url, headers, auth) as client:
                cursor: str | None = None
                for _ in range(MAX_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        return tools

    async def call_tool(
        self,
        url: str,
        headers: Mapping[str, str],
        auth: httpx2.Auth | None,
        name: str,
        arguments: dict[str, Any],
    ) -> types.CallToolResult:
        with anyio.fail_after(self._timeout):
            async with self._open(url, headers, auth) as client:
                return await client.call_tool(name, arguments)
