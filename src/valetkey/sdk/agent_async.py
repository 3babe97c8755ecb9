"""`AsyncAgentClient`: the agent side of ValetKey for asyncio code.

Same behaviour as `AgentClient` (see `valetkey.sdk.agent` for the contract of each method),
with `await` and one `asyncio.Lock` per cached token: concurrent tasks that need a token
share one token request.
"""

import asyncio
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from valetkey.sdk import _env
from valetkey.sdk._core import JWT_TOKEN_TYPE, Core, credentials
from valetkey.sdk.auth import AgentAuth, AsyncFixedToken, AsyncTokenSource
from valetkey.sdk.correlation import HEADER as CORRELATION_HEADER
from valetkey.sdk.correlation import current_correlation_id
from valetkey.sdk.errors import ApprovalTimeout, AsyncWaiter
from valetkey.sdk.models import AccessToken, Approval, Decision, Intent
from valetkey.sdk.token_cache import AsyncCacheSource, AsyncTokenCache

MAX_WAIT = 60.0  # the longest long-poll ValetKey serves


class AsyncAgentClient:
    """An agent's connection to ValetKey (asyncio). Close it, or use `async with`."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str | None = None,
        private_key: str | bytes | None = None,
        *,
        dpop: bool = False,
        resource: str | None = None,
        scope: str | None = None,
        key_id: str | None = None,
        refresh_ratio: float = 0.8,
        timeout: float = 30.0,
        verify: Any = True,
    ) -> None:
        creds = credentials(client_id, client_secret, private_key, key_id)
        self._core = Core(issuer, client_id, creds, dpop=dpop, resource=resource, scope=scope,
                          refresh_ratio=refresh_ratio)  # fmt: skip
        self._timeout = timeout
        self._verify = verify
        self._http = httpx.AsyncClient(timeout=timeout, verify=verify, follow_redirects=False)
        self._tokens = AsyncTokenCache(self._core, self._http)
        self._auth = self.auth_for()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """A client from `VALETKEY_*` variables; see `AgentClient.from_env`."""
        return cls(**{**_env.arguments(environ), **options})

    @property
    def issuer(self) -> str:
        return self._core.issuer

    @property
    def client_id(self) -> str:
        return self._core.client_id

    @property
    def jkt(self) -> str | None:
        """The DPoP key's thumbprint (what bound tokens carry as `cnf.jkt`), if any."""
        return self._core.dpop_key.jkt if self._core.dpop_key is not None else None

    # tokens ------------------------------------------------------------------------------
    async def token(self, resource: str | None = None, scope: str | None = None) -> AccessToken:
        """The agent's own token for (resource, scope); see `AgentClient.token`."""
        return await self._tokens.get(self._core.key(resource, scope), current_correlation_id())

    async def exchange(
        self,
        subject_token: str,
        *,
        resource: str | None = None,
        scope: str | None = None,
        mandate: Mapping[str, Any] | None = None,
        subject_token_type: str = JWT_TOKEN_TYPE,
    ) -> AccessToken:
        """A token to act for a user (RFC 8693); see `AgentClient.exchange`."""
        form = Core.exchange_form(subject_token, subject_token_type,
                                  resource or self._core.resource, scope, mandate)  # fmt: skip
        token, _ = await self._tokens.request(form, resource or self._core.resource,
                                              current_correlation_id())  # fmt: skip
        return token

    # decisions and approvals -------------------------------------------------------------
    async def authorize(
        self,
        intent: Intent | Mapping[str, Any],
        *,
        approval_id: str | None = None,
        token: AccessToken | None = None,
    ) -> Decision:
        """Ask before acting; see `AgentClient.authorize`."""
        parsed = Intent.of(intent)
        auth = self.auth_for(token=token)
        response = await self._http.post(
            self._core.authorize_url, json=Core.authorize_body(parsed, approval_id), auth=auth,
            headers={CORRELATION_HEADER: current_correlation_id()},
        )  # fmt: skip
        return Core.decision_from(response, parsed, None, self._waiter(auth))

    async def wait_for_approval(
        self,
        approval_id: str,
        *,
        timeout: float = 300.0,  # noqa: ASYNC109 - the same API as AgentClient's
        token: AccessToken | None = None,
    ) -> Approval:
        """Long-poll an approval until decided; see `AgentClient.wait_for_approval`."""
        return await self._wait(approval_id, timeout, self.auth_for(token=token))

    # HTTP --------------------------------------------------------------------------------
    @property
    def auth(self) -> AgentAuth:
        """An `httpx.Auth` for `httpx.AsyncClient` with the client's default token."""
        return self._auth

    def auth_for(
        self,
        resource: str | None = None,
        scope: str | None = None,
        *,
        token: AccessToken | None = None,
    ) -> AgentAuth:
        """An `httpx.Auth` presenting `token`, or the cached token for (resource, scope)."""
        source: AsyncTokenSource = (
            AsyncFixedToken(token)
            if token is not None
            else AsyncCacheSource(self._tokens, self._core.key(resource, scope))
        )
        return AgentAuth(self._core, async_source=source)

    def gateway(
        self,
        provider: str,
        *,
        scope: str | None = None,
        token: AccessToken | None = None,
        **options: Any,
    ) -> httpx.AsyncClient:
        """An `httpx.AsyncClient` for `{issuer}/v1/gateway/{provider}`; see
        `AgentClient.gateway`. Close it (`async with`)."""
        base = self._core.gateway_url(provider)
        source: AsyncTokenSource = (
            AsyncFixedToken(token)
            if token is not None
            else AsyncCacheSource(self._tokens, (base, scope))
        )
        waiter = self._waiter(AgentAuth(self._core, async_source=source))
        auth = AgentAuth(self._core, async_source=source, refusals=(None, waiter), confine_to=base)
        options.setdefault("timeout", self._timeout)
        options.setdefault("verify", self._verify)
        return httpx.AsyncClient(base_url=base, auth=auth, follow_redirects=False, **options)

    async def aclose(self) -> None:
        await self._tokens.close()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncAgentClient(issuer={self.issuer!r}, client_id={self.client_id!r})"

    # internals ---------------------------------------------------------------------------
    def _waiter(self, auth: AgentAuth) -> AsyncWaiter:
        async def wait(approval_id: str, timeout: float) -> Approval:  # noqa: ASYNC109
            return await self._wait(approval_id, timeout, auth)

        return wait

    async def _wait(
        self,
        approval_id: str,
        timeout: float,  # noqa: ASYNC109 - a deadline across several long polls
        auth: AgentAuth,
    ) -> Approval:
        url = self._core.approval_url(approval_id)
        headers = {CORRELATION_HEADER: current_correlation_id()}
        deadline = time.monotonic() + timeout
        while True:
            started = time.monotonic()
            wait = min(MAX_WAIT, max(deadline - started, 0.0))
            response = await self._http.get(url, params={"wait": f"{wait:.1f}"}, auth=auth,
                                            headers=headers,
                                            timeout=wait + self._timeout)  # fmt: skip
            approval = Core.approval_from(response)
            if not approval.pending:
                return approval
            now = time.monotonic()
            if now >= deadline:
                raise ApprovalTimeout(approval)
            if now - started < 1.0:  # answered early but still pending: never spin
                await asyncio.sleep(min(1.0, deadline - now))
