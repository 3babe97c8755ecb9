"""`AgentClient`: the agent side of ValetKey for ordinary (threaded or plain) Python.

One client per agent identity. It discovers the token endpoint once (RFC 8414), keeps one
token per (resource, scope), refreshes it in the background once 80% of its life has
passed — only while the agent keeps using it, so an idle agent leaves no trail of unused
tokens in the audit log — and lets concurrent callers share one token request. It asks
ValetKey before acting (`authorize`), waits for humans when a decision needs one, and calls
platforms through the gateway without ever holding their tokens.

`AsyncAgentClient` (`valetkey.sdk.agent_async`) is the same for asyncio; both share the
protocol code (`valetkey.sdk._core`) and differ only in how they send and lock
(`valetkey.sdk.token_cache`).
"""

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from valetkey.sdk import _env
from valetkey.sdk._core import JWT_TOKEN_TYPE, Core, credentials
from valetkey.sdk.auth import AgentAuth, FixedToken, SyncTokenSource
from valetkey.sdk.correlation import HEADER as CORRELATION_HEADER
from valetkey.sdk.correlation import current_correlation_id
from valetkey.sdk.errors import ApprovalTimeout, SyncWaiter
from valetkey.sdk.models import AccessToken, Approval, Decision, Intent
from valetkey.sdk.token_cache import CacheSource, TokenCache

MAX_WAIT = 60.0  # the longest long-poll ValetKey serves


class AgentClient:
    """An agent's connection to ValetKey. Thread-safe; close it, or use `with`.

    Authenticate with `client_secret` (`client_secret_basic`) or `private_key` (a PEM;
    `private_key_jwt`, RFC 7523, better: nothing secret crosses the wire). `dpop=True` binds
    every token to a P-256 key generated in memory (RFC 9449). `resource` and `scope` are
    the defaults for `token()`, `authorize()` and `auth`. `key_id` names the registered key
    (`kid`) when the agent has several; `refresh_ratio` is the share of a token's life after
    which it is refreshed in the background; `timeout` and `verify` go to httpx.
    """

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
        self._http = httpx.Client(timeout=timeout, verify=verify, follow_redirects=False)
        self._tokens = TokenCache(self._core, self._http)
        self._auth = self.auth_for()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """A client from the deployment's environment (`os.environ` unless given):

        `VALETKEY_ISSUER`, `VALETKEY_CLIENT_ID`, and exactly one of
        `VALETKEY_CLIENT_SECRET`, `VALETKEY_CLIENT_SECRET_FILE` (a file holding the
        secret) and `VALETKEY_PRIVATE_KEY_FILE` (a PEM private key); optionally
        `VALETKEY_PRIVATE_KEY_ID`, `VALETKEY_RESOURCE`, `VALETKEY_SCOPE` and
        `VALETKEY_DPOP=1`. `options` override them (e.g. `dpop=True`).

        Credentials come from the deployment, never from a prompt or from anything a model
        wrote: a model's output is untrusted input."""
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
    def token(self, resource: str | None = None, scope: str | None = None) -> AccessToken:
        """The agent's own token (`client_credentials`) for `resource` and `scope`, or the
        client's defaults.

        Cached per (resource, scope). Past `refresh_ratio` of its life (80%) the cached
        token is still returned at once while one background request fetches the next;
        past its expiry (less a few seconds) callers wait for a new one. Either way
        concurrent callers share a single token request. `expires_in` is trusted up to an
        hour (ValetKey's maximum) and taken as five minutes when missing.
        Raises `OAuthError` when ValetKey refuses."""
        return self._tokens.get(self._core.key(resource, scope), current_correlation_id())

    def exchange(
        self,
        subject_token: str,
        *,
        resource: str | None = None,
        scope: str | None = None,
        mandate: Mapping[str, Any] | None = None,
        subject_token_type: str = JWT_TOKEN_TYPE,
    ) -> AccessToken:
        """A token to act for a user (RFC 8693 token exchange), never cached.

        `subject_token` is the user's identity: an assertion from the company IdP (the
        default type, `urn:ietf:params:oauth:token-type:jwt`), or a ValetKey token
        (`urn:ietf:params:oauth:token-type:access_token`, also for sub-agent chains).
        `mandate` bounds the task (RFC 9396): `{"actions": [...], "locations": [...],
        "user_request": "..."}`, sent as an authorization detail of type `mandate`.
        Present the result with `authorize(..., token=)`, `gateway(..., token=)` or
        `auth_for(token=)`. Raises `OAuthError` (e.g. `invalid_grant`: no delegation)."""
        resource = resource or self._core.resource
        form = Core.exchange_form(subject_token, subject_token_type, resource, scope, mandate)
        token, _ = self._tokens.request(form, resource, current_correlation_id())
        return token

    # decisions and approvals -------------------------------------------------------------
    def authorize(
        self,
        intent: Intent | Mapping[str, Any],
        *,
        approval_id: str | None = None,
        token: AccessToken | None = None,
    ) -> Decision:
        """Ask ValetKey before acting (`POST /v1/authorize`); returns only when allowed.

        A deny raises `Denied` (`RateLimited` when a limit is used up), so the line after
        `authorize()` runs only for an allowed intent. `approval_required` raises
        `ApprovalRequired`: `err.wait()` until a human decides, then call again with
        `approval_id=err.approval_id`. `token` presents another token than the client's
        default (e.g. one from `exchange()` to act for a user)."""
        parsed = Intent.of(intent)
        auth = self.auth_for(token=token)
        response = self._http.post(
            self._core.authorize_url, json=Core.authorize_body(parsed, approval_id), auth=auth,
            headers={CORRELATION_HEADER: current_correlation_id()},
        )  # fmt: skip
        return Core.decision_from(response, parsed, self._waiter(auth), None)

    def wait_for_approval(
        self, approval_id: str, *, timeout: float = 300.0, token: AccessToken | None = None
    ) -> Approval:
        """Long-poll `GET /v1/approvals/{id}?wait=…` until the approval is no longer pending
        and return it (`approved`, `denied` or `expired`); `ApprovalTimeout` after
        `timeout` seconds. The agent's own token may read its own approvals."""
        return self._wait(approval_id, timeout, self.auth_for(token=token))

    # HTTP --------------------------------------------------------------------------------
    @property
    def auth(self) -> AgentAuth:
        """An `httpx.Auth` presenting the client's default token, for any `httpx.Client`."""
        return self._auth

    def auth_for(
        self,
        resource: str | None = None,
        scope: str | None = None,
        *,
        token: AccessToken | None = None,
    ) -> AgentAuth:
        """An `httpx.Auth` presenting `token`, or the cached token for (resource, scope)."""
        source: SyncTokenSource = (
            FixedToken(token)
            if token is not None
            else CacheSource(self._tokens, self._core.key(resource, scope))
        )
        return AgentAuth(self._core, source=source)

    def gateway(
        self,
        provider: str,
        *,
        scope: str | None = None,
        token: AccessToken | None = None,
        **options: Any,
    ) -> httpx.Client:
        """An `httpx.Client` whose base URL is `{issuer}/v1/gateway/{provider}`: paths are
        the platform's API paths (`crm.get("/deals/42")`). Close it (`with`).

        It presents a token for the resource `{issuer}/v1/gateway/{provider}` (with `scope`,
        or all the agent's scopes for it), or `token`. ValetKey's own refusals raise:
        `ApprovalRequired` (retry with `headers=err.retry_headers` once approved), `Denied`
        / `RateLimited` (a policy decision), `GatewayError` (anything else ValetKey refused:
        no connection, bad path, platform unreachable). The platform's answers, its errors
        included, are ordinary responses. `options` go to `httpx.Client`."""
        base = self._core.gateway_url(provider)
        source: SyncTokenSource = (
            FixedToken(token) if token is not None else CacheSource(self._tokens, (base, scope))
        )
        waiter = self._waiter(AgentAuth(self._core, source=source))
        auth = AgentAuth(self._core, source=source, refusals=(waiter, None), confine_to=base)
        options.setdefault("timeout", self._timeout)
        options.setdefault("verify", self._verify)
        return httpx.Client(base_url=base, auth=auth, follow_redirects=False, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AgentClient(issuer={self.issuer!r}, client_id={self.client_id!r})"

    # internals ---------------------------------------------------------------------------
    def _waiter(self, auth: AgentAuth) -> SyncWaiter:
        def wait(approval_id: str, timeout: float) -> Approval:
            return self._wait(approval_id, timeout, auth)

        return wait

    def _wait(self, approval_id: str, timeout: float, auth: AgentAuth) -> Approval:
        url = self._core.approval_url(approval_id)
        headers = {CORRELATION_HEADER: current_correlation_id()}
        deadline = time.monotonic() + timeout
        while True:
            started = time.monotonic()
            wait = min(MAX_WAIT, max(deadline - started, 0.0))
            response = self._http.get(url, params={"wait": f"{wait:.1f}"}, auth=auth,
                                      headers=headers, timeout=wait + self._timeout)  # fmt: skip
            approval = Core.approval_from(response)
            if not approval.pending:
                return approval
            now = time.monotonic()
            if now >= deadline:
                raise ApprovalTimeout(approval)
            if now - started < 1.0:  # answered early but still pending: never spin
                time.sleep(min(1.0, deadline - now))
