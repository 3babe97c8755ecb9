"""Actions and policies as an admin manages them: register actions, validate, push, show,
roll back and test policy sets. The CLI (and later the console) call this."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cedarpy
import orjson

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.errors import InvalidInput, NotFound
from valetkey.identity.mandates import MandateError, parse_mandate
from valetkey.identity.models import CLASSES, Client
from valetkey.identity.scopes import valid_scope
from valetkey.identity.service import IdentityService
from valetkey.ids import new_id
from valetkey.oauth.context import TenantCache
from valetkey.policy.cedar import DEFAULT_POLICIES, schema_text, validate
from valetkey.policy.decision import ActionDef, Caller, DecisionPoint, PolicyStore, PolicyVersion
from valetkey.policy.intent import IntentError, parse_intent, valid_action_name
from valetkey.policy.limits import EACH_USER, WINDOWS, Limit

Events = Sequence[AuditEvent]
MAX_POLICY_BYTES = 256 * 1024


class PolicyAdminStore(PolicyStore, Protocol):
    async def add_action(
        self, tenant_id: str, action: ActionDef, now: float, events: Events
    ) -> None: ...
    async def history(self, tenant_id: str) -> list[dict[str, Any]]: ...
    async def push(
        self,
        tenant_id: str,
        text: str,
        note: str,
        now: float,
        events: Events,
        entities: Sequence[dict[str, Any]] = (),
    ) -> int: ...
    async def activate(self, tenant_id: str, version: int, events: Events) -> None: ...


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    expected: str
    got: str
    reasons: list[dict[str, str]]
    policies: list[str]

    @property
    def passed(self) -> bool:
        return self.expected == self.got


class LimitAdminStore(Protocol):
    async def list_limits(self, tenant_id: str) -> list[Limit]: ...
    async def set_limit(self, limit: Limit, now: float, events: Events) -> Limit: ...


class PolicyService:
    def __init__(
        self,
        identity: IdentityService,
        store: PolicyAdminStore,
        clock: Clock,
        cid: str,
        limits: LimitAdminStore | None = None,
    ) -> None:
        self._identity = identity
        self._limits = limits
        self._store = store
        self._clock = clock
        self._cid = cid

    def _ev(self, type: str, tenant_id: str, **data: Any) -> AuditEvent:
        return AuditEvent(type, tenant_id, self._clock.now(), self._cid, data=data)

    # actions -------------------------------------------------------------------------------
    async def add_action(
        self, tenant_ref: str, name: str, klass: str, scope: str | None
    ) -> ActionDef:
        tenant = await self._identity.tenant(tenant_ref)
        if not valid_action_name(name):
            raise InvalidInput("an action name is lower case: letters, digits and . : _ -")
        if klass not in CLASSES:
            raise InvalidInput(f"--class is one of {', '.join(CLASSES)}")
        if name in CLASSES and name != klass:
            raise InvalidInput(f"{name!r} is a class name: its class is itself")
        if scope is not None:
            declared = {s for r in await self._identity.list_resources(tenant.id) for s in r.scopes}
            if not valid_scope(scope) or scope not in declared:
                raise InvalidInput(
                    f"scope {scope!r} is not declared by any of the tenant's resources"
                )
        action = ActionDef(name, klass, scope)
        event = self._ev("action.added", tenant.id, name=name, action_class=klass, scope=scope)
        await self._store.add_action(tenant.id, action, self._clock.now(), [event])
        return action

    async def list_actions(self, tenant_ref: str) -> list[ActionDef]:
        return await self._store.list_actions((await self._identity.tenant(tenant_ref)).id)

    # limits --------------------------------------------------------------------------------
    async def set_limit(
        self,
        tenant_ref: str,
        *,
        agent: str | None,
        user: str | None,
        klass: str | None,
        maximum: int | None,
        budget: int | None,
        per: str,
    ) -> Limit:
        assert self._limits is not None
        tenant = await self._identity.tenant(tenant_ref)
        if (maximum is None) == (budget is None):
            raise InvalidInput("give either --max N (a count) or --budget AMOUNT (a cost)")
        if per not in WINDOWS:
            raise InvalidInput("--per is minute, hour or day")
        if budget is not None and per != "day":
            raise InvalidInput("budgets are per day")
        value = maximum if maximum is not None else budget
        if value is None or value < 0:
            raise InvalidInput("a limit is a whole number, 0 or more")
        if klass is not None and klass not in CLASSES:
            raise InvalidInput(f"--class is one of {', '.join(CLASSES)}")
        agent_id = (await self._identity.agent(agent, tenant.id)).id if agent else None
        if user == "each":
            user_id: str | None = EACH_USER
        else:
            user_id = (await self._identity.user(tenant.id, user)).id if user else None
        limit = Limit(new_id("lim"), tenant.id, agent_id, user_id, klass,
                      "count" if maximum is not None else "budget", value, per)  # type: ignore[arg-type]  # fmt: skip
        event = self._ev("limit.set", tenant.id, limit_id=limit.id, agent_id=agent_id,
                         user_id=user_id, action_class=klass, kind=limit.kind,
                         maximum=value, per=per)  # fmt: skip
        return await self._limits.set_limit(limit, self._clock.now(), [event])

    async def list_limits(self, tenant_ref: str) -> list[Limit]:
        assert self._limits is not None
        return await self._limits.list_limits((await self._identity.tenant(tenant_ref)).id)

    # policies ------------------------------------------------------------------------------
    async def schema(self, tenant_id: str) -> str:
        return schema_text((a.name, a.klass) for a in await self._store.list_actions(tenant_id))

    async def validate(self, tenant_ref: str, text: str) -> list[str]:
        tenant = await self._identity.tenant(tenant_ref)
        if len(text.encode()) > MAX_POLICY_BYTES:
            return [f"a policy set is at most {MAX_POLICY_BYTES} bytes"]
        return validate(text, await self.schema(tenant.id))

    async def push(self, tenant_ref: str, text: str, note: str = "", entities: Any = None) -> int:
        """Validate and activate `text` (with the tenant's own Cedar entities, if any)."""
        tenant = await self._identity.tenant(tenant_ref)
        errors = await self.validate(tenant.id, text)
        if errors:
            raise InvalidInput("the policies do not validate: " + "; ".join(errors[:5]))
        stored = _entities(entities)
        digest = hashlib.sha256(text.encode()).hexdigest()
        event = self._ev("policy.pushed", tenant.id, sha256=digest, note=note[:256],
                         entities=len(stored))  # fmt: skip
        return await self._store.push(
            tenant.id, text, note[:256], self._clock.now(), [event], stored
        )

    async def show(self, tenant_ref: str) -> dict[str, Any]:
        tenant = await self._identity.tenant(tenant_ref)
        active = await self._store.active_policy(tenant.id)
        shown = active or PolicyVersion(0, DEFAULT_POLICIES)
        return {"tenant": tenant.id, "version": shown.version, "default": active is None,
                "text": shown.text, "entities": list(shown.entities),
                "schema": await self.schema(tenant.id)}  # fmt: skip

    async def history(self, tenant_ref: str) -> list[dict[str, Any]]:
        return await self._store.history((await self._identity.tenant(tenant_ref)).id)

    async def rollback(self, tenant_ref: str, to: int | None = None) -> int:
        """Activate version `to`, by default the one before the active version."""
        tenant = await self._identity.tenant(tenant_ref)
        versions = await self._store.history(tenant.id)
        active = next((v["version"] for v in versions if v["active"]), None)
        if to is None:
            older = [v["version"] for v in versions if active is not None and v["version"] < active]
            if not older:
                raise NotFound("there is no earlier policy version to roll back to")
            to = max(older)
        event = self._ev("policy.rolled_back", tenant.id, version=to, previous=active)
        await self._store.activate(tenant.id, to, [event])
        return to

    async def test(self, tenant_ref: str, cases: Any, text: str | None = None) -> list[CaseResult]:
        """Run data-driven cases against the active policies, or against `text` before it is
        pushed: `[{"name", "agent"?, "user"?, "intent": {…}, "expect"}]`, and optionally
        `scopes`, `mandate` ({"actions", "locations"}), `counters` ({class: n}),
        `spent_today` and `approved` for the decision's context."""
        tenant = await self._identity.tenant(tenant_ref)
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            raise InvalidInput("the cases file holds a JSON array of objects")
        store: PolicyStore = self._store if text is None else _Candidate(self._store, text)
        if text is not None:
            errors = await self.validate(tenant.id, text)
            if errors:
                raise InvalidInput("the policies do not validate: " + "; ".join(errors[:5]))
        point = DecisionPoint(store, TenantCache())
        resources = await self._identity.list_resources(tenant.id)
        results = []
        for number, case in enumerate(cases, start=1):
            name = str(case.get("name") or f"case {number}")
            expect = case.get("expect")
            if expect not in ("allow", "deny", "approval_required"):
                raise InvalidInput(f"{name}: expect is allow, deny or approval_required")
            try:
                intent, _ = parse_intent(case.get("intent"))
            except IntentError as exc:
                raise InvalidInput(f"{name}: {exc}") from exc
            caller = await self._caller(tenant.id, case)
            decision = await point.structural(caller, intent, resources)
            if decision.decision == "allow" and decision.action_class is not None:
                decision = await point.by_policy(
                    caller, intent, decision.action_class, dict(case.get("counters") or {}),
                    int(case.get("spent_today") or 0), bool(case.get("approved")),
                )  # fmt: skip
            results.append(CaseResult(name, expect, decision.decision,
                                      [r.to_json() for r in decision.reasons],
                                      decision.policies))  # fmt: skip
        return results

    async def _caller(self, tenant_id: str, case: dict[str, Any]) -> Caller:
        ref = case.get("agent")
        if ref:
            agents = await self._identity.list_agents(tenant_id)
            found = next((a for a in agents if ref in (a.id, a.name)), None)
            if found is None:
                raise InvalidInput(f"{case.get('name')}: no agent {ref!r} in this tenant")
            agent = found
        else:  # no agent named: one that holds every scope, so the policies alone decide
            declared = {s for r in await self._identity.list_resources(tenant_id) for s in r.scopes}
            agent = Client("agt_policy_test", tenant_id, "agent", "policy-test", "active",
                           scopes=tuple(sorted(declared)))  # fmt: skip
        user = await self._identity.user(tenant_id, case["user"]) if case.get("user") else None
        scopes = tuple(case.get("scopes") or agent.scopes)
        mandate = None
        if case.get("mandate") is not None:
            try:
                mandate = parse_mandate({"type": "mandate", **case["mandate"]})
            except (MandateError, TypeError) as exc:
                raise InvalidInput(f"{case.get('name')}: mandate: {exc}") from exc
        tenant = await self._identity.tenant(tenant_id)
        return Caller(tenant, agent, user, scopes, mandate, "test")


class _Candidate:
    """The tenant's actions with a policy text that is not pushed yet."""

    def __init__(self, store: PolicyStore, text: str) -> None:
        self._store = store
        self._text = text

    async def list_actions(self, tenant_id: str) -> list[ActionDef]:
        return await self._store.list_actions(tenant_id)

    async def active_policy(self, tenant_id: str) -> PolicyVersion | None:
        return PolicyVersion(-1, self._text)


def _entities(data: Any) -> list[dict[str, Any]]:
    """A Cedar entities list (`[{"uid": {"type", "id"}, "attrs", "parents"}]`), checked."""
    if data is None:
        return []
    if not isinstance(data, list) or len(data) > 10_000:
        raise InvalidInput("the entities file holds a JSON array (at most 10,000 entities)")
    try:
        cedarpy.Entities.from_json_str(orjson.dumps(data).decode())
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"the entities are not valid Cedar entities: {exc}") from exc
    return data
