"""Approvals inbox (approvers and admins): pending requests, newest first, live; approve or
deny with a reason; the history of decided ones. A request shows what a person needs to
judge it: the agent, for whom it acts, the action in plain words, the user's own request,
the task's mandate and whether the intent stays inside it, the risk class, the time left."""

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from valetkey.errors import InvalidInput
from valetkey.identity.mandates import MandateError, parse_mandate
from valetkey.identity.models import Client, User
from valetkey.policy.approvals import Approval, Approvals
from valetkey.policy.decision import outside_mandate
from valetkey.policy.intent import IntentError, parse_intent
from valetkey.web.console.base import (
    APPROVERS,
    Viewer,
    cid,
    form,
    redirect,
    render,
    runtime_of,
    viewer,
)

router = APIRouter(prefix="/console/approvals", include_in_schema=False)
HISTORY = 50


@dataclass(frozen=True, slots=True)
class Card:
    """One approval as the inbox shows it."""

    approval: Approval
    agent: Client | None
    user: User | None
    decided_by: User | None
    mandate: dict[str, Any] | None
    mandate_check: str  # a sentence: inside, outside (and why), or no mandate

    @property
    def summary(self) -> str:
        name = self.agent.name if self.agent else self.approval.agent_id
        return f"{name} asks to {self.approval.intent.get('action', '')}"


def _mandate_check(approval: Approval) -> str:
    if approval.mandate is None:
        return "No task mandate: the agent acts within its delegation."
    try:
        mandate = parse_mandate(approval.mandate)
        intent, _ = parse_intent(dict(approval.intent))
    except (MandateError, IntentError):
        return "The mandate cannot be read."
    why = outside_mandate(mandate, intent, approval.action_class)
    return f"Outside the task's mandate: {why}." if why else "Inside the task's mandate."


async def _cards(request: Request, who: Viewer, found: list[Approval]) -> list[Card]:
    runtime = runtime_of(request)
    tenant_id = who.tenant.id
    agents = {a.id: a for a in await runtime.identity_store.list_clients(tenant_id, "agent")}
    users = {u.id: u for u in await runtime.identity_store.list_users(tenant_id)}
    return [
        Card(a, agents.get(a.agent_id), users.get(a.user_id or ""),
             users.get(a.decided_by or ""), a.mandate, _mandate_check(a))
        for a in found
    ]  # fmt: skip


async def _lists(
    request: Request, who: Viewer, history: bool = True
) -> tuple[list[Card], list[Card]]:
    runtime = runtime_of(request)
    now = runtime.clock.now()
    store = runtime.approval_store
    pending = [
        a for a in await store.list_approvals(who.tenant.id, "pending") if a.expires_at > now
    ]
    decided = [a for a in await store.list_approvals(who.tenant.id, None)
               if a.status != "pending"][:HISTORY] if history else []  # fmt: skip
    return await _cards(request, who, pending), await _cards(request, who, decided)


@router.get("")
async def inbox(request: Request) -> Response:
    who = await viewer(request, APPROVERS)
    partial = bool(request.query_params.get("partial"))  # the live list: no history
    pending, decided = await _lists(request, who, history=not partial)
    template = "approvals_pending.html" if partial else "approvals.html"
    return render(request, who, template, title="Approvals", pending=pending, decided=decided)


@router.get("/{approval_id}")
async def one(request: Request, approval_id: str) -> Response:
    """One request (the link in an approval's email or webhook)."""
    who = await viewer(request, APPROVERS)
    approvals: Approvals = request.app.state.approvals
    found = await approvals.get(approval_id[:64], who.tenant.id)
    [card] = await _cards(request, who, [found])
    return render(request, who, "approval.html", title="Approval request", card=card)


@router.post("/{approval_id}")
async def decide(request: Request, approval_id: str) -> Response:
    who = await viewer(request, APPROVERS)
    fields = await form(request)
    verdict = fields.get("decision")
    if verdict not in ("approve", "deny"):
        raise InvalidInput("choose approve or deny")
    approvals: Approvals = request.app.state.approvals
    reason = fields.get("reason", "").strip()[:1000] or None
    await approvals.decide(
        approval_id[:64], who.user, verdict == "approve", reason,
        who.tenant.settings.self_approval_classes, cid(request),
    )  # fmt: skip
    return redirect("/console/approvals", "approved" if verdict == "approve" else "denied")
