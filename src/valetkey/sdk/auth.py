"""`AgentAuth`: an `httpx.Auth` that presents the agent's ValetKey token on any request.

It adds `Authorization: Bearer …` (or `DPoP …` with a fresh proof carrying `ath` and the
origin's last nonce) and `X-Correlation-Id`, then handles the two answers that a retry
fixes: a resource server's `use_dpop_nonce` (RFC 9449 §9: retried once with its nonce) and
a 401 challenging the token (`WWW-Authenticate: Bearer …` or `DPoP …`: it was revoked or
expired early, so the request is retried once with a fresh token — fetched once however
many requests saw the 401). Anything else is the caller's response.

The same object serves `httpx.Client` and `httpx.AsyncClient` of the client it came from:
an `AgentClient`'s auth works with sync clients, an `AsyncAgentClient`'s with async ones.
"""

import re
from collections.abc import AsyncGenerator, Generator
from typing import Protocol

import httpx

from valetkey.sdk._core import Core, is_valetkey_problem, raise_for_refusal
from valetkey.sdk.correlation import HEADER as CORRELATION_HEADER
from valetkey.sdk.correlation import current_correlation_id
from valetkey.sdk.errors import AsyncWaiter, SDKError, SyncWaiter
from valetkey.sdk.models import AccessToken


class SyncTokenSource(Protocol):
    def get(self, cid: str) -> AccessToken: ...

    def renew(self, stale: AccessToken, cid: str) -> AccessToken | None:
        """A fresh token after `stale` was refused; None when this source cannot renew."""
        ...


class AsyncTokenSource(Protocol):
    async def get(self, cid: str) -> AccessToken: ...

    async def renew(self, stale: AccessToken, cid: str) -> AccessToken | None: ...


class FixedToken:
    """A token handed in by the caller (e.g. from `exchange()`): presented, never renewed."""

    def __init__(self, token: AccessToken) -> None:
        self.token = token

    def get(self, cid: str) -> AccessToken:
        return self.token

    def renew(self, stale: AccessToken, cid: str) -> AccessToken | None:
        return None


class AsyncFixedToken:
    """`FixedToken` for async clients."""

    def __init__(self, token: AccessToken) -> None:
        self.token = token

    async def get(self, cid: str) -> AccessToken:
        return self.token

    async def renew(self, stale: AccessToken, cid: str) -> AccessToken | None:
        return None


Refusals = tuple[SyncWaiter | None, AsyncWaiter | None]
_TOKEN_SCHEMES = re.compile(r"(?:^|[\s,])(?:bearer|dpop)(?:\s|$)", re.IGNORECASE)


class AgentAuth(httpx.Auth):
    """Presents a ValetKey access token; see the module docstring for the retries."""

    requires_request_body = True  # a retried request is sent again, body included

    def __init__(
        self,
        core: Core,
        *,
        source: SyncTokenSource | None = None,
        async_source: AsyncTokenSource | None = None,
        refusals: Refusals | None = None,
        confine_to: str | None = None,
    ) -> None:
        self._core = core
        self._source = source
        self._async_source = async_source
        self._refusals = refusals  # gateway clients: ValetKey's own refusals raise
        # Gateway clients: the token goes only to URLs under the gateway's base URL, however
        # the path was built (an absolute URL or `..` segments in a model-chosen path).
        self._confine_to = httpx.URL(confine_to.rstrip("/") + "/") if confine_to else None

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if self._source is None:
            raise RuntimeError("this auth belongs to an AsyncAgentClient: use httpx.AsyncClient")
        self._check_target(request)
        cid = _correlate(request)
        token = self._source.get(cid)
        nonce_retried = renewed = False
        while True:
            self._present(request, token)
            response = yield request
            if not nonce_retried and self._wants_nonce(request, response, token):
                nonce_retried = True
                continue
            if not renewed and _token_refused(response):
                renewed = True
                fresh = self._source.renew(token, cid)
                if fresh is not None:
                    token = fresh
                    continue
            break
        if self._refusals is not None:
            if is_valetkey_problem(response):
                response.read()
            raise_for_refusal(response, *self._refusals)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._async_source is None:
            raise RuntimeError("this auth belongs to an AgentClient: use httpx.Client")
        self._check_target(request)
        cid = _correlate(request)
        token = await self._async_source.get(cid)
        nonce_retried = renewed = False
        while True:
            self._present(request, token)
            response = yield request
            if not nonce_retried and self._wants_nonce(request, response, token):
                nonce_retried = True
                continue
            if not renewed and _token_refused(response):
                renewed = True
                fresh = await self._async_source.renew(token, cid)
                if fresh is not None:
                    token = fresh
                    continue
            break
        if self._refusals is not None:
            if is_valetkey_problem(response):
                await response.aread()
            raise_for_refusal(response, *self._refusals)

    def _check_target(self, request: httpx.Request) -> None:
        base = self._confine_to
        if base is None:
            return
        url = request.url
        inside = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
        if not inside or not url.path.startswith(base.path) or "/../" in url.path + "/":
            raise SDKError(
                f"refusing to send the agent's token outside {base}: {url.copy_with(query=None)}"
            )

    def _present(self, request: httpx.Request, token: AccessToken) -> None:
        request.headers["Authorization"] = f"{token.token_type} {token.value}"
        if not token.is_dpop:
            request.headers.pop("DPoP", None)
            return
        key = self._core.dpop_key
        if key is None:
            raise SDKError("a DPoP-bound token needs the client that holds its key (dpop=True)")
        url = str(request.url)
        request.headers["DPoP"] = key.proof(
            request.method, url, nonce=self._core.nonces.get(url), access_token=token.value
        )

    def _wants_nonce(
        self, request: httpx.Request, response: httpx.Response, token: AccessToken
    ) -> bool:
        """Note the answer's nonce; True for a resource server's `use_dpop_nonce` (§9)."""
        nonce = self._core.nonces.note(str(request.url), response)
        challenge = response.headers.get("www-authenticate", "")
        return (
            token.is_dpop
            and nonce is not None
            and response.status_code == 401
            and "use_dpop_nonce" in challenge
        )


def _token_refused(response: httpx.Response) -> bool:
    """A 401 that challenges for a token (RFC 6750 §3, RFC 9449 §7.1). Through the gateway
    a platform's own 401 arrives without its challenge (ValetKey strips it): that one is
    the platform's answer, and a new ValetKey token would not change it."""
    if response.status_code != 401:
        return False
    challenge = response.headers.get("www-authenticate", "")
    return bool(_TOKEN_SCHEMES.search(challenge))


def _correlate(request: httpx.Request) -> str:
    """The request's correlation id: the caller's header, else the context's, else new."""
    cid: str | None = request.headers.get(CORRELATION_HEADER)
    if not cid:
        cid = current_correlation_id()
        request.headers[CORRELATION_HEADER] = cid
    return cid
