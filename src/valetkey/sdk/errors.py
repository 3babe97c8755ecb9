"""What the SDK raises. Every class derives from `SDKError`.

Agents: `OAuthError` (the token endpoint said no), `Denied` / `RateLimited` (the decision
point said no), `ApprovalRequired` (a human must say yes first), `ApprovalTimeout`,
`GatewayError` (ValetKey refused a gateway call for another reason) and `ProblemError`
(any other RFC 9457 answer from ValetKey's API). Resource servers: `InvalidToken`
(RFC 6750 §3.1 and RFC 9449 §7.1 error codes) and `MissingToken`.

No message ever contains a token: errors are logged, and logs are read by more people
than tokens should be.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from valetkey.sdk.models import Approval, Decision, Intent

APPROVAL_HEADER = "X-ValetKey-Approval"


class SDKError(Exception):
    """Base of everything the SDK raises on purpose."""


class OAuthError(SDKError):
    """The token endpoint refused (RFC 6749 §5.2): `error` is the RFC code."""

    def __init__(self, error: str, description: str = "", status_code: int = 400) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status_code = status_code


class ProblemError(SDKError):
    """ValetKey's API answered an RFC 9457 problem (`application/problem+json`)."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        self.status = status
        self.body = dict(body)
        self.code = str(body.get("code") or "error")
        self.title = str(body.get("title") or "")
        self.detail = str(body.get("detail") or "")
        super().__init__(f"{status} {self.code}: {self.detail or self.title}")


class GatewayError(ProblemError):
    """ValetKey refused a gateway call before it reached the platform, for a reason other
    than a policy decision: no valid token (401), a path or intent it will not derive (400),
    a missing scope (403 `insufficient_scope`), no connection or one needing re-consent
    (409), the platform unreachable or too slow (502 / 504). The platform's own answers,
    errors included, are never raised: they come back as responses."""


class Denied(SDKError):
    """The decision point denied the intent; `decision.reasons` say why."""

    def __init__(self, decision: Decision, problem: Mapping[str, Any] | None = None) -> None:
        self.decision = decision
        self.problem = dict(problem) if problem is not None else None
        reasons = "; ".join(f"{r.code}: {r.message}" if r.message else r.code
                            for r in decision.reasons)  # fmt: skip
        super().__init__(f"denied ({reasons or 'no reason given'})")

    @property
    def code(self) -> str | None:
        return self.decision.code


class RateLimited(Denied):
    """A rate limit or budget is used up; `retry_after` is in seconds when ValetKey says."""

    @property
    def retry_after(self) -> float | None:
        value = self.decision.limits.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


SyncWaiter = Callable[[str, float], Approval]
AsyncWaiter = Callable[[str, float], Awaitable[Approval]]


class ApprovalRequired(SDKError):
    """A human must approve this intent first. ValetKey has notified the approvers.

    `wait(timeout)` (sync clients) or `await wait_async(timeout)` (async clients) long-polls
    until someone decides or the approval expires and returns the final `Approval`. Then
    retry: `client.authorize(err.intent, approval_id=err.approval_id)`, or the gateway call
    with `headers=err.retry_headers`. An approval covers exactly this intent, once."""

    def __init__(
        self,
        approval: Approval,
        *,
        intent: Intent | None = None,
        decision: Decision | None = None,
        wait_sync: SyncWaiter | None = None,
        wait_async: AsyncWaiter | None = None,
    ) -> None:
        super().__init__(f"approval {approval.id} required ({approval.status}); see {approval.url}")
        self.approval = approval
        self.intent = intent
        self.decision = decision
        self._wait_sync = wait_sync
        self._wait_async = wait_async

    @property
    def approval_id(self) -> str:
        return self.approval.id

    @property
    def retry_headers(self) -> dict[str, str]:
        """The header that presents the approval on a retried gateway call."""
        return {APPROVAL_HEADER: self.approval.id}

    def wait(self, timeout: float = 300.0) -> Approval:
        """Block until the approval is decided or expires; `ApprovalTimeout` after `timeout`."""
        if self._wait_sync is None:
            raise TypeError("raised by an async client: use `await error.wait_async()`")
        return self._wait_sync(self.approval.id, timeout)

    async def wait_async(self, timeout: float = 300.0) -> Approval:  # noqa: ASYNC109
        """`wait()` for `AsyncAgentClient`."""
        if self._wait_async is None:
            raise TypeError("raised by a sync client: use `error.wait()`")
        return await self._wait_async(self.approval.id, timeout)


class ApprovalTimeout(SDKError, TimeoutError):
    """Nobody decided within the timeout; `approval` is the last state seen (pending)."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(f"approval {approval.id} is still {approval.status}")
        self.approval = approval


class InvalidToken(SDKError):
    """A resource server refuses the presented token (RFC 6750 §3.1, RFC 9449 §7.1).

    `error` is `invalid_token`, `invalid_dpop_proof`, `invalid_request` or
    `insufficient_scope`; `status_code` the HTTP status to answer with; `scheme` the
    authentication scheme of the challenge (`DPoP` when the failure concerns a proof or a
    DPoP-bound token)."""

    _STATUS = {"invalid_request": 400, "insufficient_scope": 403}

    def __init__(
        self,
        error: str,
        description: str = "",
        status_code: int | None = None,
        *,
        scheme: str = "Bearer",
    ) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status_code = status_code or self._STATUS.get(error, 401)
        self.scheme = scheme  # the challenge to answer with: "Bearer" or "DPoP"


class MissingToken(InvalidToken):
    """No access token at all: answered 401 with a bare challenge (RFC 6750 §3.1)."""

    def __init__(self, description: str = "an access token is required") -> None:
        super().__init__("invalid_request", description, 401)
