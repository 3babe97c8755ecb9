"""An intent: what a tool call is about to do, declared before it happens.

`action` is a tenant-registered action (`crm:deals.delete`) or a bare class name (`read`,
`write`, `delete`, `bulk`, `send`, `spend`); `resource` is a string such as `crm:deals/123`;
`count` and `cost` are non-negative integers (cost in the tenant's unit, e.g. cents);
`context` is free-form JSON (the user's request, channel, environment, parent call), capped
in size so an intent can always be audited whole. Pure parsing; no I/O.
"""

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

ACTION_RE = re.compile(r"[a-z][a-z0-9_.:-]{0,127}")
MAX_RESOURCE = 512
MAX_CONTEXT_BYTES = 8192
MAX_NUMBER = 10**12
_FIELDS = frozenset({"action", "resource", "count", "cost", "context", "approval_id"})


class IntentError(ValueError):
    """The intent is malformed: the caller gets a 400, never a decision."""


@dataclass(frozen=True, slots=True)
class Intent:
    action: str
    resource: str
    count: int | None = None
    cost: int | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def canonical(self) -> bytes:
        """What an approval is bound to: the exact action, resource, count and cost."""
        return orjson.dumps(
            {"action": self.action, "resource": self.resource, "count": self.count,
             "cost": self.cost},
            option=orjson.OPT_SORT_KEYS,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "resource": self.resource}
        if self.count is not None:
            out["count"] = self.count
        if self.cost is not None:
            out["cost"] = self.cost
        if self.context:
            out["context"] = self.context
        return out

    @property
    def user_request(self) -> str | None:
        said = self.context.get("user_request") or self.context.get("request")
        return said if isinstance(said, str) else None


def valid_action_name(name: str) -> bool:
    return bool(ACTION_RE.fullmatch(name))


def _number(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NUMBER:
        raise IntentError(f"{name} is a whole number from 0 to {MAX_NUMBER}")
    return value


def parse_intent(body: Any) -> tuple[Intent, str | None]:
    """The intent and the approval id presented with it, from a decision request body."""
    if not isinstance(body, dict):
        raise IntentError("the request body is a JSON object")
    unknown = set(body) - _FIELDS
    if unknown:
        raise IntentError(f"unknown field {sorted(unknown)[0][:64]!r}")
    action, resource = body.get("action"), body.get("resource")
    if not isinstance(action, str) or not valid_action_name(action):
        raise IntentError("action is a name such as crm:deals.delete, or a class such as read")
    if not isinstance(resource, str) or not resource or len(resource) > MAX_RESOURCE:
        raise IntentError(f"resource is a non-empty string of at most {MAX_RESOURCE} characters")
    if not resource.isprintable():
        raise IntentError("resource holds printable characters only")
    context = body.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise IntentError("context is a JSON object")
    if len(orjson.dumps(context)) > MAX_CONTEXT_BYTES:
        raise IntentError(f"context is at most {MAX_CONTEXT_BYTES} bytes of JSON")
    approval = body.get("approval_id")
    if approval is not None and (not isinstance(approval, str) or len(approval) > 64):
        raise IntentError("approval_id is an approval's id")
    intent = Intent(action, resource, _number(body, "count"), _number(body, "cost"), context)
    return intent, approval
