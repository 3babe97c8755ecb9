"""One decision from start to audit: who is asking (from a live token's claims), the
decision point's checks in order, and the `decision.made` audit event, durable before the
answer goes out. `/v1/authorize` and the AuthZEN endpoints both end here."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from valetkey.audit.events import AuditEvent
from valetkey.audit.writer import AuditSink
from valetkey.clock import Clock
from valetkey.identity.mandates import Mandate, MandateError, parse_mandate
from valetkey.identity.models import Resource
from valetkey.oauth.context import ClientContext, TenantCache
from valetkey.oauth.delegated import ClientLoader, DelegatedStore
from valetkey.oauth.verification import actors
from valetkey.policy import limits
from valetkey.policy.approvals import Approvals
from valetkey.policy.decision import Caller, Decision, DecisionPoint, Reason
from valetkey.policy.intent import Intent

MAX_AUDITED_CONTEXT = 2048
_APPROVAL_REFUSALS = {
    "approval_not_found": "no such approval in this tenant",
    "approval_mismatch": "the approval covers another intent, agent or user",
    "approval_pending": "the approval is still waiting for a human",
    "approval_denied": "a human denied this",
    "approval_expired": "the approval has expired; ask again",
    "approval_used": "the approval was already used",
}


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
        approvals: Approvals,
        issuer: str,
        usage: limits.UsageStore,
        cache: TenantCache,
    ) -> None:
        self._usage_store = usage
        self._cache = cache
        self._approvals = approvals
        self._issuer = issuer
        self._point = point
        self._clients = clients
        self._users = users
        self._resources = resources
        self._audit = audit
        self._clock = clock

    async def caller(
        self, claims: dict[str, Any], ctx: ClientContext | None = None
    ) -> tuple[Caller, ClientContext]:
        """Who asks, from a live token's claims (and its client, when already loaded)."""
        if ctx is None:
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

    async def action_class(self, caller: Caller, name: str) -> str | None:
        """The class of one of the caller's tenant's actions (None: no such action)."""
        found = await self._point.action(caller.tenant, name)
        return found.klass if found else None

    async def decide(
        self,
        caller: Caller,
        ctx: ClientContext,
        intent: Intent,
        approval_id: str | None,
        correlation_id: str,
    ) -> Decision:
        decision = await self._point.structural(caller, intent, await self._resources(ctx))
        klass = decision.action_class
        counters: tuple[tuple[str, int, float, int], ...] = ()
        if decision.decision == "allow" and klass is not None:
            user_id = caller.user.id if caller.user else None
            charges = limits.charges(
                await self._limits(caller), caller.agent.id, user_id, klass, intent.cost or 0,
                self._clock.now(),
            )  # fmt: skip
            usage, seen = await self._usage(caller, charges)
            decision = self._over(charges, seen, klass) or await self._point.by_policy(
                caller, intent, klass, usage.counters, usage.spent_today, approved=False
            )
            if decision.decision == "approval_required":
                decision = await self._approval(caller, intent, klass, usage, decision,
                                                approval_id, correlation_id)  # fmt: skip
            if decision.decision == "allow":
                over = await self._usage_store.charge(caller.tenant.id, charges)
                if over is not None:
                    decision = self._rate_limited(over, klass)
                else:
                    decision.limits = _remaining(charges, seen)
                    counters = tuple(
                        (c.key, c.window_start, c.expires_at, c.amount)
                        for c in limits.context_charges(
                            caller.agent.id, user_id, klass, intent.cost or 0, self._clock.now()
                        )
                    )
        event = self._event(caller, intent, decision, correlation_id)
        await self._audit.record(replace(event, counters=counters))
        return decision

    async def _limits(self, caller: Caller) -> list[limits.Limit]:
        tenant = caller.tenant
        return await self._cache.get(
            tenant, "limits", lambda: self._usage_store.list_limits(tenant.id)
        )

    async def _usage(
        self, caller: Caller, charges: list[limits.Charge]
    ) -> tuple[Usage, dict[tuple[str, int], int]]:
        """The counters policies read and the limit counters, in one read."""
        now = self._clock.now()
        user_id = caller.user.id if caller.user else None
        context = limits.context_keys(caller.agent.id, user_id, now)
        keys = context + [(c.key, c.window_start) for c in charges]
        seen = await self._usage_store.read_counters(caller.tenant.id, keys)
        by_class = {k.rsplit(":", 1)[1]: seen.get((k, w), 0) for k, w in context[:-1]}
        return Usage(by_class, seen.get(context[-1], 0)), seen

    def _over(
        self, charges: list[limits.Charge], seen: dict[tuple[str, int], int], klass: str
    ) -> Decision | None:
        """A limit already reached: deny before the policies run (cheap first)."""
        for charge in charges:
            if charge.maximum is not None and (
                seen.get((charge.key, charge.window_start), 0) + charge.amount > charge.maximum
            ):
                return self._rate_limited(charge, klass)
        return None

    def _rate_limited(self, charge: limits.Charge, klass: str) -> Decision:
        lim = charge.limit
        what = f"{lim.kind} limit of {lim.maximum} per {lim.per}" if lim else "a limit"
        retry = charge.retry_after(self._clock.now())
        decision = Decision("deny", klass, [Reason("rate_limited", f"{what} reached")])
        decision.limits = {"retry_after": retry, "limit_id": lim.id if lim else None}
        return decision

    async def _approval(
        self,
        caller: Caller,
        intent: Intent,
        klass: str,
        usage: Usage,
        asked: Decision,
        approval_id: str | None,
        cid: str,
    ) -> Decision:
        """Ask a human, or spend the approval presented for this exact intent."""
        if approval_id is None:
            approval = await self._approvals.request(caller, intent, klass, cid)
            asked.approval = approval.summary(self._issuer)
            return asked
        found, why = await self._approvals.check(approval_id, caller, intent, cid)
        if found is None:
            return Decision("deny", klass, [Reason(why, _APPROVAL_REFUSALS.get(why, why))],
                            policy_version=asked.policy_version)  # fmt: skip
        decision = await self._point.by_policy(
            caller, intent, klass, usage.counters, usage.spent_today, approved=True
        )
        if decision.decision == "allow" and not await self._approvals.consume(found, cid):
            decision = Decision("deny", klass, [Reason("approval_used", _APPROVAL_REFUSALS[
                "approval_used"])], policy_version=decision.policy_version)  # fmt: skip
        decision.approval = {**found.summary(self._issuer), "status": "used"}
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


def _remaining(charges: list[limits.Charge], seen: dict[tuple[str, int], int]) -> dict[str, Any]:
    """What is left of each limit that counted this decision (as of just before it)."""
    left: dict[str, Any] = {}
    for charge in charges:
        if charge.limit is not None and charge.maximum is not None:
            used = seen.get((charge.key, charge.window_start), 0) + charge.amount
            left[charge.limit.id] = {
                "kind": charge.limit.kind, "per": charge.limit.per,
                "maximum": charge.maximum, "remaining": max(0, charge.maximum - used),
            }  # fmt: skip
    return left
