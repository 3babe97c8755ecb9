"""The policy decision point: allow, deny or ask a human, for one declared intent.

Checks run cheapest first, and the first that fails decides: the action is known (unknown
actions are denied: fail closed); the token holds the action's scope; the intent lies
inside the token's mandate (else `intent_outside_mandate`, flagged `suspected_injection`
in the audit log: that is what a prompt injection looks like from here); rate limits and
budgets; then the tenant's Cedar policies. The caller (HTTP or AuthZEN) has already
checked the token; this module does no I/O of its own beyond the ports it is given.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from valetkey.identity.mandates import Mandate, covered
from valetkey.identity.models import CLASSES, Client, Resource, Tenant, User
from valetkey.identity.scopes import closure
from valetkey.ids import new_id
from valetkey.oauth.audience import all_implications
from valetkey.oauth.context import TenantCache
from valetkey.policy.cedar import DEFAULT_POLICIES, CompiledPolicies
from valetkey.policy.intent import Intent

Verdict = Literal["allow", "deny", "approval_required"]


@dataclass(frozen=True, slots=True)
class ActionDef:
    name: str
    klass: str
    scope: str | None


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the agent, the user it acts for (if any), and what its token grants."""

    tenant: Tenant
    agent: Client
    user: User | None
    scopes: tuple[str, ...]
    mandate: Mandate | None
    jti: str
    actors: tuple[str, ...] = ()  # the delegation chain, newest first

    @property
    def delegation_key(self) -> str | None:
        """What an approval is bound to besides the intent: the user and the chain."""
        if self.user is None:
            return None
        chain = "/".join(self.actors or (self.agent.id,))
        return hashlib.sha256(f"{self.user.id}|{chain}".encode()).hexdigest()


@dataclass
class Decision:
    decision: Verdict
    action_class: str | None
    reasons: list[Reason] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    policy_version: int | None = None
    approval: dict[str, Any] | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: new_id("dec"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision": self.decision,
            "decision_id": self.id,
            "reasons": [r.to_json() for r in self.reasons],
            "policies": self.policies,
            "limits": self.limits,
        }
        if self.approval is not None:
            out["approval"] = self.approval
        return out


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    version: int
    text: str
    entities: tuple[dict[str, Any], ...] = ()  # the tenant's own Cedar entities (AuthZEN)


class PolicyStore(Protocol):
    async def list_actions(self, tenant_id: str) -> list[ActionDef]: ...
    async def active_policy(self, tenant_id: str) -> PolicyVersion | None:
        """The tenant's active policy set; None: the default."""
        ...


def outside_mandate(mandate: Mandate, intent: Intent, klass: str) -> str | None:
    """Why the intent lies outside the mandate, or None. An action is inside when the
    mandate names it or its class; the resource must match one of its locations."""
    if not (covered(intent.action, mandate.actions) or covered(klass, mandate.actions)):
        return f"the task's mandate does not include {intent.action!r}"
    if not covered(intent.resource, mandate.locations):
        return f"the task's mandate does not reach {intent.resource!r}"
    return None


class DecisionPoint:
    def __init__(self, store: PolicyStore, cache: TenantCache) -> None:
        self._store = store
        self._cache = cache

    async def action(self, tenant: Tenant, name: str) -> ActionDef | None:
        async def load() -> dict[str, ActionDef]:
            return {a.name: a for a in await self._store.list_actions(tenant.id)}

        known = await self._cache.get(tenant, "actions", load)
        found = known.get(name)
        if found is None and name in CLASSES:
            return ActionDef(name, name, None)  # a bare class: valid, and needs no scope
        return found

    async def policies(self, tenant: Tenant) -> CompiledPolicies:
        async def load() -> CompiledPolicies:
            actions = [(a.name, a.klass) for a in await self._store.list_actions(tenant.id)]
            active = await self._store.active_policy(tenant.id) or PolicyVersion(
                0, DEFAULT_POLICIES
            )
            return CompiledPolicies(active.text, actions, active.version, active.entities)

        return await self._cache.get(tenant, "policies", load)

    async def structural(
        self, caller: Caller, intent: Intent, resources: Sequence[Resource]
    ) -> Decision:
        """The checks before limits and policies; a decision of "allow" means "go on"."""
        action = await self.action(caller.tenant, intent.action)
        if action is None:
            return Decision("deny", None, [Reason("unknown_action",
                            f"{intent.action!r} is not an action of this tenant")])  # fmt: skip
        if action.scope is not None:
            held = closure(caller.scopes, all_implications(resources))
            if action.scope not in held:
                return Decision("deny", action.klass, [Reason(
                    "insufficient_scope", f"{intent.action!r} needs the scope {action.scope!r}",
                )])  # fmt: skip
        if caller.mandate is not None:
            why = outside_mandate(caller.mandate, intent, action.klass)
            if why is not None:
                return Decision(
                    "deny", action.klass, [Reason("intent_outside_mandate", why)],
                    flags=["suspected_injection"],
                )  # fmt: skip
        return Decision("allow", action.klass)

    async def by_policy(
        self,
        caller: Caller,
        intent: Intent,
        klass: str,
        counters: dict[str, int],
        spent_today: int,
        approved: bool,
    ) -> Decision:
        compiled = await self.policies(caller.tenant)
        outcome = compiled.by_class(klass, approved)
        if outcome is None:
            context: dict[str, Any] = {
                "class": klass, "approved": approved, "count": intent.count or 0,
                "cost": intent.cost or 0, "on_behalf": caller.user is not None,
                "counters": {c: counters.get(c, 0) for c in CLASSES},
                "spent_today": spent_today,
                "request": str(intent.context.get("user_request")
                               or intent.context.get("request") or "")[:2000],
                "channel": str(intent.context.get("channel") or "")[:200],
                "environment": str(intent.context.get("environment") or "")[:200],
            }  # fmt: skip
            if caller.user is not None:
                context["user"] = {"__entity": {"type": "User", "id": caller.user.id}}
            outcome = compiled.evaluate(
                ("Agent", caller.agent.id), intent.action, ("Resource", intent.resource),
                context, self._entities(caller, intent),
            )  # fmt: skip
        decision = Decision(
            outcome.decision, klass, policies=list(outcome.policies),
            policy_version=compiled.version,
        )  # fmt: skip
        if outcome.decision == "deny":
            code = "policy_denied" if outcome.policies else "no_policy_allows"
            decision.reasons.append(Reason(code, "the tenant's policies do not allow this"))
        elif outcome.decision == "approval_required":
            decision.reasons.append(Reason("approval_required", "a human must approve this"))
        return decision

    @staticmethod
    def _entities(caller: Caller, intent: Intent) -> list[dict[str, Any]]:
        tenant = {"type": "Tenant", "id": caller.tenant.id}
        found: list[dict[str, Any]] = [
            {"uid": {"type": "Agent", "id": caller.agent.id},
             "attrs": {"name": caller.agent.name, "sponsor": caller.agent.sponsor_id or ""},
             "parents": [tenant]},
            {"uid": {"type": "Resource", "id": intent.resource},
             "attrs": {"kind": intent.resource.split(":", 1)[0]}, "parents": []},
        ]  # fmt: skip
        if caller.user is not None:
            found.append(
                {"uid": {"type": "User", "id": caller.user.id},
                 "attrs": {"email": caller.user.email, "roles": list(caller.user.roles)},
                 "parents": [tenant]}
            )  # fmt: skip
        return found
