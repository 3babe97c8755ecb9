"""The OpenID AuthZEN Authorization API onto the tenant's Cedar policies, for enforcement
points that authenticated the caller themselves (resource servers, gateways).

Mapping (DESIGN.md): principal `User::"<subject.id>"` or `Agent::"<subject.id>"` by
`subject.type` (any other type maps to itself), action `Action::"<action.name>"`, resource
`<resource.type>::"<resource.id>"`; each `properties` object becomes that entity's
attributes, on top of the tenant's stored entities; `context` is the Cedar context. The
decision is true exactly when Cedar allows.
"""

import re
from dataclasses import dataclass
from typing import Any

from valetkey.audit.events import AuditEvent
from valetkey.audit.writer import AuditSink
from valetkey.clock import Clock
from valetkey.identity.models import Tenant
from valetkey.ids import new_id
from valetkey.policy.cedar import CompiledPolicies
from valetkey.policy.decision import DecisionPoint

_TYPE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*")
_TYPES = {"user": "User", "agent": "Agent"}
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
MAX_EVALUATIONS = 100
MAX_ID = 512


class AuthZenError(ValueError):
    """The request does not follow the Authorization API's shapes (a 400)."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    subject: dict[str, Any]
    action: dict[str, Any]
    resource: dict[str, Any]
    context: dict[str, Any]


def _entity(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AuthZenError(f"{what} is an object with type and id")
    kind, ident = value.get("type"), value.get("id")
    if not isinstance(kind, str) or not _TYPE_RE.fullmatch(kind):
        raise AuthZenError(f"{what}.type is a name such as user or todo")
    if not isinstance(ident, str) or not ident or len(ident) > MAX_ID:
        raise AuthZenError(f"{what}.id is a non-empty string")
    props = value.get("properties", {})
    if props is not None and not isinstance(props, dict):
        raise AuthZenError(f"{what}.properties is an object")
    return {"type": kind, "id": ident, "properties": props or {}}


def parse_evaluation(body: Any, defaults: dict[str, Any] | None = None) -> Evaluation:
    """One evaluation; in a batch, `defaults` are the request's top-level fields."""
    if not isinstance(body, dict):
        raise AuthZenError("an evaluation is a JSON object")
    merged = {**(defaults or {}), **{k: v for k, v in body.items() if v is not None}}
    action = merged.get("action")
    if (
        not isinstance(action, dict)
        or not isinstance(action.get("name"), str)
        or not action["name"]
    ):
        raise AuthZenError("action is an object with a name")
    props = action.get("properties", {})
    if props is not None and not isinstance(props, dict):
        raise AuthZenError("action.properties is an object")
    context = merged.get("context") or {}
    if not isinstance(context, dict):
        raise AuthZenError("context is an object")
    return Evaluation(
        _entity(merged.get("subject"), "subject"),
        {"name": action["name"][:MAX_ID], "properties": props or {}},
        _entity(merged.get("resource"), "resource"),
        context,
    )


def parse_batch(body: Any) -> tuple[list[Evaluation], str]:
    """The evaluations of a batch request (each item over the defaults) and its semantic."""
    if not isinstance(body, dict):
        raise AuthZenError("the request is a JSON object")
    defaults = {k: body[k] for k in ("subject", "action", "resource", "context") if k in body}
    items = body.get("evaluations")
    if items is None:
        return [parse_evaluation(defaults)], "execute_all"
    if not isinstance(items, list) or len(items) > MAX_EVALUATIONS:
        raise AuthZenError(f"evaluations is an array of at most {MAX_EVALUATIONS} objects")
    options = body.get("options") or {}
    semantic = (
        options.get("evaluations_semantic", "execute_all") if isinstance(options, dict) else None
    )
    if semantic not in SEMANTICS:
        raise AuthZenError(f"options.evaluations_semantic is one of {', '.join(SEMANTICS)}")
    return [parse_evaluation(item, defaults) for item in items], str(semantic)


def _request_entity(
    compiled: CompiledPolicies, kind: str, ident: str, props: dict[str, Any]
) -> list[dict[str, Any]]:
    """The request's entity, if it adds anything to the tenant's directory. The directory
    wins on a conflict: a caller cannot give its subject the admin role."""
    stored = compiled.stored.get((kind, ident))
    if stored is None:
        return [{"uid": {"type": kind, "id": ident}, "attrs": props, "parents": []}]
    attrs = {**props, **stored.get("attrs", {})}
    if attrs == stored.get("attrs", {}):
        return []  # the stored entity, as it is
    return [{"uid": {"type": kind, "id": ident}, "attrs": attrs,
             "parents": stored.get("parents", [])}]  # fmt: skip


class AuthZen:
    def __init__(self, point: DecisionPoint, audit: AuditSink, clock: Clock) -> None:
        self._point = point
        self._audit = audit
        self._clock = clock

    async def evaluate(
        self, tenant: Tenant, evaluations: list[Evaluation], semantic: str, cid: str
    ) -> list[dict[str, Any]]:
        compiled = await self._point.policies(tenant)
        answers: list[dict[str, Any]] = []
        events = []
        for item in evaluations:
            answer = self._one(compiled, item)
            answers.append(answer)
            events.append(self._event(tenant, item, answer, compiled.version, cid))
            allowed = answer["decision"]
            if (semantic == "deny_on_first_deny" and not allowed) or (
                semantic == "permit_on_first_permit" and allowed
            ):
                break
        for event in events:
            await self._audit.record(event)
        return answers

    @staticmethod
    def _one(compiled: CompiledPolicies, item: Evaluation) -> dict[str, Any]:
        subject_type = _TYPES.get(item.subject["type"], item.subject["type"])
        subject = (subject_type, item.subject["id"])
        resource = (item.resource["type"], item.resource["id"])
        entities = _request_entity(compiled, *subject, item.subject["properties"])
        if resource != subject:
            entities += _request_entity(compiled, *resource, item.resource["properties"])
        # Only ValetKey's approval flow approves: a caller's context never does.
        context = {**item.context, "approved": False}
        try:
            outcome = compiled.evaluate(subject, item.action["name"], resource, context, entities)
        except (ValueError, TypeError) as exc:
            raise AuthZenError(f"the request cannot be evaluated: {exc}") from exc
        answer: dict[str, Any] = {"decision": outcome.decision == "allow"}
        if outcome.decision == "approval_required":
            answer["context"] = {"reason": "approval_required"}
        return answer

    def _event(
        self, tenant: Tenant, item: Evaluation, answer: dict[str, Any], version: int, cid: str
    ) -> AuditEvent:
        return AuditEvent(
            "decision.made", tenant.id, self._clock.now(), cid,
            outcome="success" if answer["decision"] else "failure",
            data={
                "decision_id": new_id("dec"), "source": "authzen",
                "decision": "allow" if answer["decision"] else "deny",
                "subject": {"type": item.subject["type"], "id": item.subject["id"]},
                "action": item.action["name"],
                "resource": {"type": item.resource["type"], "id": item.resource["id"]},
                "policy_version": version,
            },
        )  # fmt: skip
