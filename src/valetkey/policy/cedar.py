"""Tenant policies in Cedar (cedarpy): the schema of ValetKey's entities, the default policy
set, validation, and evaluation with the `@outcome("approval")` convention.

The schema is generated per tenant because Cedar declares every action: the six classes
are action groups (and valid actions themselves), and each registered action is a member of
its class, so `action in Action::"delete"` covers `crm:deals.delete`. A policy set is parsed
once per tenant and version (parsing is the dominant cost of a Cedar call); annotations are
read once from its JSON form, so a decision only maps the determining policy ids.

A forbid policy annotated `@outcome("approval")` that denies a request turns the deny into
`approval_required`; when the approval is presented, the request is evaluated again with
`context.approved = true`.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cedarpy
import orjson

from valetkey.identity.models import CLASSES

SCHEMA_HEAD = """
entity Tenant;
entity User in [Tenant] { email: String, roles: Set<String> };
entity Agent in [Tenant] { name: String, sponsor: String };
entity Resource { kind: String };
type Counters = { read: Long, write: Long, delete: Long, bulk: Long, send: Long, spend: Long };
type IntentContext = {
  class: String, approved: Bool, count: Long, cost: Long, on_behalf: Bool, user?: User,
  counters: Counters, spent_today: Long, request: String, channel: String, environment: String
};
"""
_APPLIES = "appliesTo { principal: [Agent, User], resource: [Resource], context: IntentContext }"

DEFAULT_POLICIES = """\
// ValetKey's default policy set: reads and writes within the token's scope are allowed;
// delete, bulk, send and spend need a human's approval.
@id("allow-read-write")
permit(principal, action in [Action::"read", Action::"write"], resource);

@id("approval-for-risky-classes")
@outcome("approval")
forbid(
  principal,
  action in [Action::"delete", Action::"bulk", Action::"send", Action::"spend"],
  resource
) unless { context.approved };

@id("allow-approved")
permit(principal, action, resource) when { context.approved };
"""


class PolicyError(ValueError):
    """The policy text does not parse or does not validate against the tenant's schema."""


def _quote(name: str) -> str:
    return json.dumps(name)


def schema_text(actions: Iterable[tuple[str, str]]) -> str:
    """The tenant's Cedar schema: the head, the class groups, and each (action, class)."""
    lines = [SCHEMA_HEAD, f"action {', '.join(_quote(c) for c in CLASSES)} {_APPLIES};"]
    for name, klass in sorted(actions):
        if name not in CLASSES:
            lines.append(f"action {_quote(name)} in [{_quote(klass)}] {_APPLIES};")
    return "\n".join(lines) + "\n"


def action_entities(actions: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """The action hierarchy as Cedar entities (the schema declares it; requests need it)."""
    found: list[dict[str, Any]] = [
        {"uid": {"type": "Action", "id": c}, "attrs": {}, "parents": []} for c in CLASSES
    ]
    for name, klass in actions:
        if name not in CLASSES:
            found.append(
                {"uid": {"type": "Action", "id": name}, "attrs": {},
                 "parents": [{"type": "Action", "id": klass}]}
            )  # fmt: skip
    return found


_FOREIGN = ("unrecognized entity type", "unrecognized action")


def validate(text: str, schema: str) -> list[str]:
    """Every error found, parse errors first; [] when the policies are valid.

    A policy about ValetKey's own entities and actions must validate against the tenant's
    schema. A policy about the caller's own types (AuthZEN callers bring theirs: `todo`,
    `can_read_todos`) cannot be checked against a schema that does not know them; it is
    accepted when it parses."""
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        return [f"does not parse: {exc}"]
    result = cedarpy.validate_policies(text, schema)
    if result.validation_passed:
        return []
    errors = [str(e) for e in result.errors]
    foreign = {_policy_of(e) for e in errors if any(f in e for f in _FOREIGN)}
    return [e for e in errors if _policy_of(e) not in foreign]


def _policy_of(error: str) -> str:
    return error.split("]", 1)[0] if error.startswith("[") else ""


@dataclass(frozen=True, slots=True)
class CedarOutcome:
    decision: Literal["allow", "deny", "approval_required"]
    policies: tuple[str, ...]  # the determining policies, by their @id (else Cedar's id)
    errors: tuple[str, ...] = ()


class CompiledPolicies:
    """One tenant's policy set at one version: parsed, with its annotations, ready to run."""

    def __init__(
        self,
        text: str,
        actions: Sequence[tuple[str, str]],
        version: int,
        entities: Sequence[dict[str, Any]] = (),
    ) -> None:
        try:
            self._set = cedarpy.PolicySet.from_str(text)
            parsed = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            raise PolicyError(f"the policies do not parse: {exc}") from exc
        self.version = version
        self.text = text
        statics: dict[str, Any] = parsed.get("staticPolicies", {})
        self._ids = {pid: p.get("annotations", {}).get("id", pid) for pid, p in statics.items()}
        self._approval = {
            pid for pid, p in statics.items()
            if p.get("effect") == "forbid" and p.get("annotations", {}).get("outcome") == "approval"
        }  # fmt: skip
        self.stored = {_uid_key(e): e for e in entities if _uid_key(e) is not None}
        self._all = [*action_entities(actions), *self.stored.values()]
        try:
            self._static = cedarpy.Entities.from_json_str(orjson.dumps(self._all).decode())
        except ValueError as exc:
            raise PolicyError(f"the stored entities are not valid Cedar entities: {exc}") from exc
        self._by_class = self._class_outcomes() if text.strip() == DEFAULT_POLICIES.strip() else {}

    def _class_outcomes(self) -> dict[tuple[str, bool], CedarOutcome]:
        """The default set's answer for every (class, approved): its policies read nothing
        else — no attribute, no principal or resource, no other context — so Cedar itself,
        asked once per pair here, answers every later request (a decision's Cedar call was
        a fifth of a gateway call's CPU). Any other policy set is evaluated per request."""
        principal, resource = ("Agent", "precomputed"), ("Resource", "precomputed")
        entities = [{"uid": {"type": t, "id": i}, "attrs": {}, "parents": []}
                    for t, i in (principal, resource)]  # fmt: skip
        return {
            (klass, approved): self.evaluate(
                principal, klass, resource, {"approved": approved, "class": klass}, entities
            )
            for klass in CLASSES
            for approved in (False, True)
        }

    def by_class(self, klass: str, approved: bool) -> CedarOutcome | None:
        """The precomputed outcome, when this is the default policy set."""
        return self._by_class.get((klass, approved))

    def evaluate(
        self,
        principal: tuple[str, str],
        action: str,
        resource: tuple[str, str],
        context: dict[str, Any],
        entities: list[dict[str, Any]],
    ) -> CedarOutcome:
        """Decide one request. `entities` are the request's own (agent, user, resource):
        added to the parsed action hierarchy and stored entities, so only they are parsed
        per call (that halved a decision's Cedar time). One that redefines a stored entity
        replaces it, on a slower path."""
        request = {
            "principal": {"type": principal[0], "id": principal[1]},
            "action": {"type": "Action", "id": action},
            "resource": {"type": resource[0], "id": resource[1]},
            "context": context,
        }
        delta = orjson.dumps(entities).decode()
        try:
            handle: Any = self._static.with_added_json_str(delta)
        except ValueError:
            replaced = {_uid_key(e) for e in entities}
            handle = [e for e in self._all if _uid_key(e) not in replaced] + entities
        result = cedarpy.is_authorized(request, self._set, handle)
        reasons = tuple(result.diagnostics.reasons)
        named = tuple(self._ids.get(r, r) for r in reasons)
        errors = tuple(str(e) for e in result.diagnostics.errors)
        if result.allowed:
            return CedarOutcome("allow", named, errors)
        if reasons and all(r in self._approval for r in reasons):
            return CedarOutcome("approval_required", named, errors)
        return CedarOutcome("deny", named, errors)


def _uid_key(entity: dict[str, Any]) -> tuple[str, str] | None:
    uid = entity.get("uid") if isinstance(entity, dict) else None
    if (
        isinstance(uid, dict)
        and isinstance(uid.get("type"), str)
        and isinstance(uid.get("id"), str)
    ):
        return uid["type"], uid["id"]
    return None
