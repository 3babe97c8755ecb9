"""Human approvals: a request bound to the exact intent (a hash of action, resource, count
and cost), the agent, the user it acts for and the delegation chain; it expires and can be
used once. Every transition is a compare-and-set in the database (pending → approved |
denied | expired, approved → used), so two approvers or two uses never both win, on any
node. Who may approve: an active approver or admin of the same tenant, never the agent;
the user the agent acts for only for the classes the tenant allows (default: `write`).
"""

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock, iso
from valetkey.errors import Conflict, Forbidden, NotFound
from valetkey.identity.models import User
from valetkey.ids import new_id
from valetkey.notify.outbox import Delivery
from valetkey.policy.decision import Caller
from valetkey.policy.intent import Intent

Status = Literal["pending", "approved", "denied", "used", "expired"]
APPROVER_ROLES = ("approver", "admin")
Events = Sequence[AuditEvent]


@dataclass(frozen=True, slots=True)
class Approval:
    id: str
    tenant_id: str
    agent_id: str
    user_id: str | None
    delegation_key: str | None
    intent_hash: str
    intent: dict[str, Any]
    action_class: str
    status: Status
    created_at: float
    expires_at: float
    decided_by: str | None = None
    reason: str | None = None
    decided_at: float | None = None
    used_at: float | None = None
    mandate: dict[str, Any] | None = None  # the task's (RFC 9396 detail), for the approver

    def to_json(self, issuer: str) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "tenant": self.tenant_id,
            "agent": self.agent_id, "user": self.user_id, "intent": self.intent,
            "class": self.action_class, "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at), "decided_by": self.decided_by,
            "reason": self.reason,
            "url": f"{issuer}/v1/approvals/{self.id}",
        }  # fmt: skip

    def summary(self, issuer: str) -> dict[str, Any]:
        """The `approval` object of a decision."""
        return {"id": self.id, "status": self.status, "expires_at": iso(self.expires_at),
                "url": f"{issuer}/v1/approvals/{self.id}"}  # fmt: skip


def intent_hash(intent: Intent) -> str:
    return hashlib.sha256(intent.canonical()).hexdigest()


Planner = Callable[[Approval, Caller], Awaitable[Sequence[Delivery]]]


class ApprovalStore(Protocol):
    async def create_approval(
        self, approval: Approval, events: Events, deliveries: Sequence[Delivery] = ()
    ) -> None:
        """Store it with its events and the notifications it causes, in one transaction."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...
    async def find_pending(
        self, tenant_id: str, agent_id: str, delegation_key: str | None, digest: str, now: float
    ) -> Approval | None: ...
    async def list_approvals(self, tenant_id: str, status: str | None) -> list[Approval]: ...
    async def overdue(self, now: float, limit: int = 500) -> list[Approval]: ...
    async def transition(
        self,
        approval_id: str,
        from_status: Status,
        to: Status,
        now: float,
        fields: dict[str, Any],
        events: Events,
    ) -> bool:
        """Compare-and-set the status (with its events); False when it had moved on."""
        ...  # fmt: skip


class Approvals:
    def __init__(
        self, store: ApprovalStore, clock: Clock, ttl: int = 900, planner: Planner | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._planner = planner

    def _ev(self, type: str, a: Approval, cid: str, **fields: Any) -> AuditEvent:
        return AuditEvent(
            type, a.tenant_id, self._clock.now(), cid, agent_id=a.agent_id, user_id=a.user_id,
            data={"approval_id": a.id, "intent": a.intent, "class": a.action_class, **fields},
        )  # fmt: skip

    async def request(self, caller: Caller, intent: Intent, klass: str, cid: str) -> Approval:
        """The pending approval for this exact intent, made now unless one is waiting."""
        now = self._clock.now()
        digest = intent_hash(intent)
        waiting = await self._store.find_pending(
            caller.tenant.id, caller.agent.id, caller.delegation_key, digest, now
        )
        if waiting is not None:
            return waiting
        approval = Approval(
            id=new_id("apr"), tenant_id=caller.tenant.id, agent_id=caller.agent.id,
            user_id=caller.user.id if caller.user else None,
            delegation_key=caller.delegation_key, intent_hash=digest,
            intent=intent.to_json(), action_class=klass, status="pending",
            created_at=now, expires_at=now + self._ttl,
            mandate=caller.mandate.to_detail() if caller.mandate else None,
        )  # fmt: skip
        planned = await self._planner(approval, caller) if self._planner else ()
        event = self._ev("approval.requested", approval, cid, notifications=len(planned))
        await self._store.create_approval(approval, [event], planned)
        return approval

    async def get(self, approval_id: str, tenant_id: str | None = None) -> Approval:
        found = await self._store.get_approval(approval_id)
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise NotFound(f"no approval {approval_id!r}")
        return await self._expire(found, "")

    async def _expire(self, approval: Approval, cid: str) -> Approval:
        now = self._clock.now()
        if approval.status in ("pending", "approved") and approval.expires_at <= now:
            event = self._ev("approval.expired", approval, cid or new_id("cor"))
            await self._store.transition(approval.id, approval.status, "expired", now, {}, [event])
            return replace(approval, status="expired")
        return approval

    async def expire_overdue(self) -> int:
        """Mark what has expired as expired, once each, with its `approval.expired` event."""
        swept = 0
        for approval in await self._store.overdue(self._clock.now()):
            swept += (await self._expire(approval, "")).status == "expired"
        return swept

    async def decide(
        self,
        approval_id: str,
        approver: User,
        approve: bool,
        reason: str | None,
        self_approval_classes: Sequence[str],
        cid: str,
    ) -> Approval:
        approval = await self.get(approval_id)
        if approver.tenant_id != approval.tenant_id:
            raise NotFound(f"no approval {approval_id!r}")  # another tenant's: not even seen
        if approver.status != "active" or not set(approver.roles) & set(APPROVER_ROLES):
            raise Forbidden("only an active approver or admin of the tenant may decide")
        if approver.id == approval.user_id and approval.action_class not in self_approval_classes:
            raise Forbidden(
                f"this tenant does not let users approve their own {approval.action_class!r} "
                "requests"
            )
        if approval.status != "pending":
            raise Conflict(f"the approval is {approval.status}")
        to: Status = "approved" if approve else "denied"
        now = self._clock.now()
        event = self._ev(f"approval.{'granted' if approve else 'denied'}", approval, cid,
                         decided_by=approver.id, reason=reason)  # fmt: skip
        fields = {"decided_by": approver.id, "reason": reason, "decided_at": now}
        if not await self._store.transition(approval.id, "pending", to, now, fields, [event]):
            raise Conflict("the approval was decided at the same time; look again")
        return replace(approval, status=to, decided_by=approver.id, reason=reason,
                       decided_at=now)  # fmt: skip

    async def wait(self, approval_id: str, tenant_id: str, seconds: float) -> Approval:
        """Long poll: return when the approval leaves `pending`, or after `seconds`. Polls
        the database, so a decision made on any node ends the wait."""
        deadline = self._clock.now() + seconds
        approval = await self.get(approval_id, tenant_id)
        while approval.status == "pending" and self._clock.now() < deadline:
            await asyncio.sleep(min(0.25, max(0.0, deadline - self._clock.now())))
            approval = await self.get(approval_id, tenant_id)
        return approval

    async def check(
        self, approval_id: str, caller: Caller, intent: Intent, cid: str
    ) -> tuple[Approval | None, str]:
        """An approval this very intent of this caller may spend: (it, "") or (None, why not)."""
        found = await self._store.get_approval(approval_id)
        if found is None or found.tenant_id != caller.tenant.id:
            return None, "approval_not_found"
        approval = await self._expire(found, cid)
        if approval.agent_id != caller.agent.id or approval.delegation_key != caller.delegation_key:
            return None, "approval_mismatch"
        if approval.intent_hash != intent_hash(intent):
            return None, "approval_mismatch"
        if approval.status != "approved":
            return None, f"approval_{approval.status}"
        return approval, ""

    async def consume(self, approval: Approval, cid: str) -> bool:
        """Spend it, once: False when a concurrent request spent it first."""
        now = self._clock.now()
        event = self._ev("approval.used", approval, cid)
        return await self._store.transition(
            approval.id, "approved", "used", now, {"used_at": now}, [event]
        )
