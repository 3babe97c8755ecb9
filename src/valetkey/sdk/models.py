"""The values the SDK hands back: tokens, intents, decisions and approvals.

They are plain frozen dataclasses built from ValetKey's JSON, so an agent's code can read
them without knowing the wire format. An `AccessToken` never shows its value in `repr()`:
tokens end up in logs through repr far more often than on purpose.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A token from `/oauth/token`. `value` is the secret; print the object, not the value."""

    value: str = field(repr=False)
    token_type: str  # "Bearer", or "DPoP" when bound to the client's proof key
    expires_at: float  # Unix time, from `expires_in` (capped; see `AgentClient.token`)
    scope: str = ""
    resource: str | None = None
    issued_token_type: str | None = None  # token exchange (RFC 8693 §2.2.1)
    authorization_details: tuple[Mapping[str, Any], ...] = ()  # the mandate, when one came

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.scope.split())

    @property
    def is_dpop(self) -> bool:
        return self.token_type.lower() == "dpop"


@dataclass(frozen=True, slots=True)
class Intent:
    """What a tool call is about to do (`POST /v1/authorize`, docs/policy.md).

    `context` carries what a policy or an approver needs to judge it, e.g. the user's own
    words (`user_request`) and the channel they came from."""

    action: str
    resource: str
    count: int | None = None
    cost: int | None = None
    context: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, value: "Intent | Mapping[str, Any]") -> "Intent":
        """An `Intent` from itself or from a mapping with the same keys (others: TypeError)."""
        if isinstance(value, Intent):
            return value
        return cls(**dict(value))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"action": self.action, "resource": self.resource}
        if self.count is not None:
            body["count"] = self.count
        if self.cost is not None:
            body["cost"] = self.cost
        if self.context is not None:
            body["context"] = dict(self.context)
        return body


@dataclass(frozen=True, slots=True)
class Approval:
    """A human approval request: `pending`, then `approved`, `denied`, `expired` or `used`."""

    id: str
    status: str
    expires_at: str | None = None
    url: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the whole JSON

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Approval":
        return cls(
            id=str(body["id"]),
            status=str(body.get("status", "")),
            expires_at=_str_or_none(body.get("expires_at")),
            url=_str_or_none(body.get("url")),
            data=dict(body),
        )

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def approved(self) -> bool:
        return self.status == "approved"


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """The decision point's answer (`POST /v1/authorize` or a gateway refusal)."""

    decision: str  # "allow" | "deny" | "approval_required"
    id: str = ""
    reasons: tuple[Reason, ...] = ()
    policies: tuple[str, ...] = ()
    limits: Mapping[str, Any] = field(default_factory=dict)
    approval: Approval | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "Decision":
        reasons = tuple(
            Reason(str(r.get("code", "")), str(r.get("message", "")))
            for r in body.get("reasons") or ()
            if isinstance(r, Mapping)
        )
        approval = body.get("approval")
        limits = body.get("limits")
        return cls(
            decision=str(body.get("decision", "")),
            id=str(body.get("decision_id", "")),
            reasons=reasons,
            policies=tuple(str(p) for p in body.get("policies") or ()),
            limits=dict(limits) if isinstance(limits, Mapping) else {},
            approval=Approval.from_json(approval) if isinstance(approval, Mapping) else None,
        )

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    @property
    def code(self) -> str | None:
        """The first reason's code (`policy_denied`, `intent_outside_mandate`, …)."""
        return self.reasons[0].code if self.reasons else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
