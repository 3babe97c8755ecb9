"""What `AgentClient` and `AsyncAgentClient` share, without I/O: client authentication,
token requests and their answers, the token cache's timing, and ValetKey's JSON answers
turned into values or exceptions. The two clients only add sending (sync or async) and
their own locks, so both behave the same by construction.
"""

import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from valetkey.sdk import _jose
from valetkey.sdk.correlation import HEADER as CORRELATION_HEADER
from valetkey.sdk.dpop import DPoPKey, NonceBook
from valetkey.sdk.errors import (
    ApprovalRequired,
    AsyncWaiter,
    Denied,
    GatewayError,
    OAuthError,
    ProblemError,
    RateLimited,
    SDKError,
    SyncWaiter,
)
from valetkey.sdk.models import AccessToken, Approval, Decision, Intent

METADATA_PATH = "/.well-known/oauth-authorization-server"
CLIENT_CREDENTIALS = "client_credentials"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PROBLEM_TYPE = "urn:valetkey:problem:"
ASSERTION_LIFETIME = 60  # seconds: a client assertion is for one request, now

# Token cache timing. ValetKey never issues tokens for more than an hour, so a longer (or
# absurd) `expires_in` is capped; a missing one is taken as five minutes — a token that dies
# sooner costs one 401 and one retry, never a loop.
MAX_LIFETIME = 3600.0
DEFAULT_LIFETIME = 300.0
MIN_LIFETIME = 1.0
EXPIRY_MARGIN = 5.0  # stop presenting a token this long before its `exp` (clock skew, transit)

_PROVIDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_APPROVAL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

CacheKey = tuple[str | None, str | None]  # (resource, scope)


# client authentication -------------------------------------------------------------------
class ClientSecret:
    """`client_secret_basic` (RFC 6749 §2.3.1: id and secret form-encoded, then Basic)."""

    def __init__(self, client_id: str, secret: str) -> None:
        basic = f"{quote_plus(client_id)}:{quote_plus(secret)}"
        self._authorization = "Basic " + _jose.b64_std(basic.encode())

    def apply(self, token_endpoint: str, headers: dict[str, str], form: dict[str, str]) -> None:
        headers["Authorization"] = self._authorization

    def __repr__(self) -> str:
        return "ClientSecret(…)"


class PrivateKeyJWT:
    """`private_key_jwt` (RFC 7523 §2.2): a fresh assertion per request, `aud` = the token
    endpoint, one minute of life, a unique `jti` (ValetKey refuses a replayed one)."""

    def __init__(self, client_id: str, private_key: str | bytes, key_id: str | None) -> None:
        self._client_id = client_id
        self._key, self._alg = _jose.load_private_key(private_key)
        self._kid = key_id

    def apply(self, token_endpoint: str, headers: dict[str, str], form: dict[str, str]) -> None:
        now = int(time.time())
        claims = {
            "iss": self._client_id, "sub": self._client_id, "aud": token_endpoint,
            "iat": now, "exp": now + ASSERTION_LIFETIME, "jti": secrets.token_urlsafe(24),
        }  # fmt: skip
        header: dict[str, Any] = {"alg": self._alg, "typ": "JWT"}
        if self._kid is not None:
            header["kid"] = self._kid
        form["client_assertion_type"] = ASSERTION_TYPE
        form["client_assertion"] = _jose.sign(header, claims, self._key)

    def __repr__(self) -> str:
        return f"PrivateKeyJWT(alg={self._alg!r})"


Credentials = ClientSecret | PrivateKeyJWT


def credentials(
    client_id: str,
    client_secret: str | None,
    private_key: str | bytes | None,
    key_id: str | None = None,
) -> Credentials:
    if (client_secret is None) == (private_key is None):
        raise ValueError("give exactly one of client_secret and private_key")
    if client_secret is not None:
        return ClientSecret(client_id, client_secret)
    assert private_key is not None
    return PrivateKeyJWT(client_id, private_key, key_id)


# the token cache's timing ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cached:
    """A cached token and when (monotonic clock) to refresh it and to stop using it."""

    token: AccessToken
    refresh_at: float
    usable_until: float

    def fresh(self, now: float) -> bool:
        return now < self.refresh_at

    def usable(self, now: float) -> bool:
        return now < self.usable_until


def lifetime(expires_in: Any) -> float:
    """`expires_in` as a number of seconds we trust: capped, defaulted, never zero."""
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return DEFAULT_LIFETIME
    return min(max(float(expires_in), MIN_LIFETIME), MAX_LIFETIME)


def schedule(token: AccessToken, expires_in: Any, now: float, ratio: float) -> Cached:
    life = lifetime(expires_in)
    margin = min(EXPIRY_MARGIN, life / 10)
    return Cached(token, now + min(ratio * life, life - margin), now + life - margin)


# the core ----------------------------------------------------------------------------------
class Core:
    """One client's configuration and the wire format, shared by the sync and async client."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        creds: Credentials,
        *,
        dpop: bool,
        resource: str | None,
        scope: str | None,
        refresh_ratio: float,
    ) -> None:
        if not issuer.startswith(("https://", "http://")):
            raise ValueError("issuer must be an http(s) URL")
        if not 0.0 < refresh_ratio < 1.0:
            raise ValueError("refresh_ratio must be between 0 and 1")
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.credentials = creds
        self.dpop_key = DPoPKey() if dpop else None
        self.nonces = NonceBook()
        self.resource = resource
        self.scope = scope
        self.refresh_ratio = refresh_ratio
        self.token_endpoint: str | None = None

    @property
    def metadata_url(self) -> str:
        return self.issuer + METADATA_PATH

    def accept_metadata(self, response: httpx.Response) -> str:
        """Check the discovery document (RFC 8414 §3.3: its issuer must be ours)."""
        if response.status_code != 200:
            raise SDKError(f"discovery at {self.metadata_url} answered {response.status_code}")
        body = _json_object(response)
        if body.get("issuer") != self.issuer:
            raise SDKError(f"the metadata's issuer is {body.get('issuer')!r}, not {self.issuer!r}")
        endpoint = body.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise SDKError("the metadata names no token_endpoint")
        self.token_endpoint = endpoint
        return endpoint

    def key(self, resource: str | None, scope: str | None) -> CacheKey:
        return (resource if resource is not None else self.resource,
                scope if scope is not None else self.scope)  # fmt: skip

    # token requests --------------------------------------------------------------------
    @staticmethod
    def client_credentials_form(key: CacheKey) -> dict[str, str]:
        form = {"grant_type": CLIENT_CREDENTIALS}
        resource, scope = key
        if resource:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        return form

    @staticmethod
    def exchange_form(
        subject_token: str,
        subject_token_type: str,
        resource: str | None,
        scope: str | None,
        mandate: Mapping[str, Any] | None,
    ) -> dict[str, str]:
        form = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token,
                "subject_token_type": subject_token_type}  # fmt: skip
        if resource:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        if mandate is not None:
            form["authorization_details"] = json.dumps([{**mandate, "type": "mandate"}])
        return form

    def token_request(self, endpoint: str, form: Mapping[str, str], cid: str) -> tuple[
        dict[str, str], dict[str, str]
    ]:  # fmt: skip
        """Headers and form of one attempt: authentication and proof are fresh each time
        (assertion `jti`s and proof `jti`s are single-use)."""
        headers = {CORRELATION_HEADER: cid, "Accept": "application/json"}
        body = dict(form)
        self.credentials.apply(endpoint, headers, body)
        if self.dpop_key is not None:
            headers["DPoP"] = self.dpop_key.proof("POST", endpoint, nonce=self.nonces.get(endpoint))
        return headers, body

    def wants_nonce(self, endpoint: str, response: httpx.Response) -> bool:
        """Note the response's nonce; True when the server refused for want of one."""
        nonce = self.nonces.note(endpoint, response)
        if response.status_code != 400 or nonce is None or self.dpop_key is None:
            return False
        try:
            return bool(_json_object(response).get("error") == "use_dpop_nonce")
        except SDKError:
            return False

    @staticmethod
    def token_from(response: httpx.Response, resource: str | None) -> tuple[AccessToken, Any]:
        """The token of a 200 answer (and its raw `expires_in`), else `OAuthError`."""
        try:
            body = _json_object(response)
        except SDKError:
            body = {}
        if response.status_code != 200:
            error = body.get("error")
            raise OAuthError(
                str(error) if error else "server_error",
                str(body.get("error_description") or f"HTTP {response.status_code}"),
                response.status_code,
            )
        value, token_type = body.get("access_token"), body.get("token_type")
        if not isinstance(value, str) or not isinstance(token_type, str):
            raise OAuthError("server_error", "the token response has no access_token")
        expires_in = body.get("expires_in")
        details = body.get("authorization_details")
        token = AccessToken(
            value=value,
            token_type="DPoP" if token_type.lower() == "dpop" else "Bearer",
            expires_at=time.time() + lifetime(expires_in),
            scope=str(body.get("scope") or ""),
            resource=resource,
            issued_token_type=_str_or_none(body.get("issued_token_type")),
            authorization_details=tuple(d for d in details if isinstance(d, Mapping))
            if isinstance(details, list)
            else (),
        )
        return token, expires_in

    # /v1 ----------------------------------------------------------------------------------
    @property
    def authorize_url(self) -> str:
        return self.issuer + "/v1/authorize"

    def approval_url(self, approval_id: str) -> str:
        """Built from the issuer, never from a URL in an answer: the token goes only here."""
        if not _APPROVAL_ID.fullmatch(approval_id):
            raise ValueError(f"not an approval id: {approval_id!r}")
        return f"{self.issuer}/v1/approvals/{quote(approval_id)}"

    def gateway_url(self, provider: str) -> str:
        if not _PROVIDER.fullmatch(provider):
            raise ValueError(f"not a provider name: {provider!r}")
        return f"{self.issuer}/v1/gateway/{provider}"

    @staticmethod
    def authorize_body(intent: Intent, approval_id: str | None) -> dict[str, Any]:
        body = intent.to_json()
        if approval_id is not None:
            body["approval_id"] = approval_id
        return body

    @staticmethod
    def decision_from(
        response: httpx.Response,
        intent: Intent,
        wait_sync: SyncWaiter | None,
        wait_async: AsyncWaiter | None,
    ) -> Decision:
        """Allow: the decision. Deny: `Denied`. A human needed: `ApprovalRequired`."""
        if response.status_code != 200:
            raise ProblemError(response.status_code, _problem_body(response))
        decision = Decision.from_json(_json_object(response))
        if decision.allowed:
            return decision
        if decision.decision == "approval_required" and decision.approval is not None:
            raise ApprovalRequired(decision.approval, intent=intent, decision=decision,
                                   wait_sync=wait_sync, wait_async=wait_async)  # fmt: skip
        raise _denied(decision)

    @staticmethod
    def approval_from(response: httpx.Response) -> Approval:
        if response.status_code != 200:
            raise ProblemError(response.status_code, _problem_body(response))
        return Approval.from_json(_json_object(response))


def is_valetkey_problem(response: httpx.Response) -> bool:
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";")[0].strip().lower() == "application/problem+json"


def raise_for_refusal(
    response: httpx.Response, wait_sync: SyncWaiter | None, wait_async: AsyncWaiter | None
) -> None:
    """A gateway answer (body read): ValetKey's own refusals raise, the platform's pass."""
    if not is_valetkey_problem(response):
        return
    try:
        body = _json_object(response)
    except SDKError:
        return
    if not str(body.get("type", "")).startswith(PROBLEM_TYPE):
        return  # the platform's own problem document: a response like any other
    decision = Decision.from_json(body) if "decision" in body else None
    if body.get("code") == "approval_required" and isinstance(body.get("approval"), Mapping):
        approval = Approval.from_json(body["approval"])
        raise ApprovalRequired(approval, decision=decision, wait_sync=wait_sync,
                               wait_async=wait_async)  # fmt: skip
    if decision is not None:
        if response.status_code == 429 and "retry_after" not in decision.limits:
            retry = response.headers.get("retry-after", "")
            if retry.isdigit():
                limits = {**decision.limits, "retry_after": int(retry)}
                decision = Decision(decision.decision, decision.id, decision.reasons,
                                    decision.policies, limits, decision.approval)  # fmt: skip
        raise _denied(decision, body)
    raise GatewayError(response.status_code, body)


def _denied(decision: Decision, problem: Mapping[str, Any] | None = None) -> Denied:
    if decision.code == "rate_limited":
        return RateLimited(decision, problem)
    return Denied(decision, problem)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SDKError(f"HTTP {response.status_code}: the answer is not JSON") from exc
    if not isinstance(body, dict):
        raise SDKError(f"HTTP {response.status_code}: the answer is not a JSON object")
    return body


def _problem_body(response: httpx.Response) -> dict[str, Any]:
    try:
        return _json_object(response)
    except SDKError:
        return {"code": "http_error", "detail": f"HTTP {response.status_code}"}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
