"""One decision from start to audit: who is asking (from a live token's claims), the
decision point's checks in order, and the `decision.made` audit event, durable before the
answer goes out. `/v1/authorize` and the AuthZEN endpoints both end here."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from valetkey.audit.events import AuditEvent
from valetkey.audit.writer import AuditSink
from valetkey.clock import Clock
from valetkey.identity.mandates import Mandate, MandateError, parse_mandate
from valetkey.identity.models import Resource
from valetkey.oauth.context import ClientContext
from valetkey.oauth.delegated import ClientLoader, DelegatedStore
from valetkey.oauth.verification import actors
from valetkey.policy.decision import Caller, Decision, DecisionPoint, Reason
from valetkey.policy.intent import Intent

MAX_AUDITED_CONTEXT = 2048


class CallerError(Exception):
    """The token's claims do not describe a caller that may ask (401 for the web layer)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """What the decision's context sees: this agent's actions for this user in the last
    hour by class, and what it spent today."""

    counters: dict[str, int]
    spent_today: int


NO_USAGE = Usage({}, 0)


class Authorizer:
    def __init__(
        self,
        point: DecisionPoint,
        clients: ClientLoader,
        users: DelegatedStore,
        resources: Callable[[ClientContext], Awaitable[tuple[Resource, ...]]],
        audit: AuditSink,
        clock: Clock,
    ) -> None:
        self._point = point
        self._clients = clients
        self._users = users
        self._resources = resources
        self._audit = audit
        self._clock = clock

    async def caller(self, claims: dict[str, Any]) -> tuple[Caller, ClientContext]:
        ctx = await self._clients.load_client_context(str(claims["client_id"]))
        if ctx is None or not ctx.client.is_agent:
            raise CallerError("the token was not issued to an agent")
        user = None
        if claims["sub"] != claims["client_id"] or "act" in claims:
            user = await self._users.user_by_id(str(claims["sub"]))
            if user is None:
                raise CallerError("the token's user is unknown")
        mandate: Mandate | None = None
        details = claims.get("authorization_details")
        if details:
            try:
                mandate = parse_mandate(details[0] if isinstance(details, list) else details)
            except MandateError as exc:  # unreadable: refuse rather than drop the limits
                raise CallerError("the token's mandate cannot be read") from exc
        caller = Caller(
            tenant=ctx.tenant,
            agent=ctx.client,
            user=user,
            scopes=tuple(str(claims.get("scope", "")).split()),
            mandate=mandate,
            jti=str(claims["jti"]),
            actors=tuple(actors(claims.get("act"))),
        )
        return caller, ctx

    async def decide(
        self, caller: Caller, ctx: ClientContext, intent: Intent, correlation_id: str
    ) -> Decision:
        decision = await self._point.structural(caller, intent, await self._resources(ctx))
        if decision.decision == "allow" and decision.action_class is not None:
            decision = await self._point.by_policy(
                caller, intent, decision.action_class, NO_USAGE.counters,
                NO_USAGE.spent_today, approved=False,
            )  # fmt: skip
        await self._audit.record(self._event(caller, intent, decision, correlation_id))
        return decision

    def _event(
        self, caller: Caller, intent: Intent, decision: Decision, correlation_id: str
    ) -> AuditEvent:
        audited = intent.to_json()
        context = audited.get("context")
        if context is not None and len(repr(context)) > MAX_AUDITED_CONTEXT:
            audited["context"] = {"truncated": repr(context)[:MAX_AUDITED_CONTEXT]}
        denied = decision.decision == "deny"
        first: Reason | None = decision.reasons[0] if decision.reasons else None
        return AuditEvent(
            type="decision.made",
            tenant_id=caller.tenant.id,
            ts=self._clock.now(),
            correlation_id=correlation_id,
            outcome="failure" if denied else "success",
            reason=f"{first.code}: {first.message}" if first and denied else None,
            agent_id=caller.agent.id,
            user_id=caller.user.id if caller.user else None,
            jti=caller.jti,
            data={
                "decision_id": decision.id,
                "decision": decision.decision,
                "intent": audited,
                "class": decision.action_class,
                "reasons": [r.to_json() for r in decision.reasons],
                "policies": decision.policies,
                "policy_version": decision.policy_version,
                "flags": decision.flags,
                **({"approval_id": decision.approval["id"]} if decision.approval else {}),
            },
        )
