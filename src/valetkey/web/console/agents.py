"""Agents: the list (status, sponsor, last activity, `needs_sponsor`) and one agent's page
(facts, credentials' metadata, scopes, limits, recent decisions, an hourly activity chart),
with its lifecycle: suspend, resume, decommission and rotate its secret, each behind a
confirmation page whose POST form carries the console's CSRF token.

Who may do what:

- An admin sees every agent of the tenant and may do everything below.
- A sponsor (not an admin) sees the agents they sponsor and may suspend them: suspending
  is the safety brake, and the person accountable for an agent must be able to pull it
  without waiting for an admin. Releasing it (resume) — which could undo an admin's
  suspension during an incident —, decommissioning (final) and rotating the secret (a
  credential the sponsor would then hold) stay with admins.
- Anyone else gets 403; an agent of another tenant is a 404 for everyone.

The pages call `IdentityService` (the CLI's rules: which status may become which, the old
secret's grace period) and read the audit log; a new secret is shown once, on the page the
rotation's POST answers (no-store), and never again.
"""

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.responses import Response

from valetkey.audit.events import AuditQuery, StoredEvent
from valetkey.errors import Conflict, Forbidden, NotFound
from valetkey.identity.models import Client, User
from valetkey.policy.limits import EACH_USER, Limit
from valetkey.web.console import chart
from valetkey.web.console.base import Viewer, cid, form, redirect, render, runtime_of, span, viewer

router = APIRouter(prefix="/console/agents", include_in_schema=False)

RECENT = 20  # decisions on an agent's page
CHART_HOURS = 72
# What counts as an agent's own activity: what it asked for, not what was done to it.
ACTIVITY = (
    "token.issued", "token.refreshed", "token.exchanged", "token.refused", "decision.made",
    "gateway.called", "mcp.tool_called",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verb:
    """A change to an agent: who may make it, from which statuses the page offers it (the
    service decides on the POST), and what the confirmation page says."""

    label: str
    done: str
    admin_only: bool
    offered_from: tuple[str, ...]
    danger: bool
    consequence: str


VERBS = {
    "suspend": Verb(
        "Suspend", "suspended", False, ("active",), True,
        "It cannot get tokens while suspended, and every token it holds stops working now. "
        "Its credentials are kept, so it can be resumed later.",
    ),
    "resume": Verb(
        "Resume", "resumed", True, ("suspended",), False,
        "It can get tokens again with its existing credentials. Tokens it held before the "
        "suspension stay invalid: it must get new ones.",
    ),
    "decommission": Verb(
        "Decommission", "decommissioned", True, ("active", "suspended"), True,
        "This is final. Its secrets and keys are destroyed and every token it holds stops "
        "working now; it cannot be resumed. Its audit trail is kept.",
    ),
    "rotate": Verb(
        "Rotate secret", "", True, ("pending", "active", "suspended"), False,
        "A new client secret is made and shown to you once. The current secret keeps "
        "working for {grace}, time to deploy the new one; then it stops working.",
    ),
}  # fmt: skip


def _may_see(who: Viewer, agent: Client) -> bool:
    return who.is_admin or (agent.sponsor_id is not None and agent.sponsor_id == who.user.id)


def _may(who: Viewer, verb: Verb, agent: Client) -> bool:
    return who.is_admin if verb.admin_only else _may_see(who, agent)


def _offered(who: Viewer, agent: Client) -> list[tuple[str, Verb]]:
    """The changes this person may make to this agent in its current status."""
    return [
        (slug, verb) for slug, verb in VERBS.items()
        if agent.status in verb.offered_from and _may(who, verb, agent)
        and (slug != "rotate" or _has_secret(agent))
    ]  # fmt: skip


def _has_secret(agent: Client) -> bool:
    """Rotation is for agents that authenticate with a secret (not keys, not public)."""
    return not agent.public and not agent.jwks


async def _agent(request: Request, who: Viewer, agent_id: str) -> Client:
    """The tenant's agent this person may see: another tenant's is not found, one they
    do not sponsor is forbidden."""
    runtime = runtime_of(request)
    if not agent_id.startswith("agt_"):
        raise NotFound(f"no agent {agent_id[:64]!r}")
    agent = await runtime.identity(cid(request)).agent(agent_id[:64], who.tenant.id)
    if not _may_see(who, agent):
        raise Forbidden("only an admin or the agent's sponsor sees this agent")
    return agent


def _verb(slug: str) -> Verb:
    verb = VERBS.get(slug)
    if verb is None:
        raise NotFound(f"no such change {slug[:32]!r}")
    return verb


@router.get("")
async def agents(request: Request) -> Response:
    who = await viewer(request)
    runtime = runtime_of(request)
    listed = await runtime.identity(cid(request)).list_agents(who.tenant.id)
    if not who.is_admin:
        listed = [a for a in listed if _may_see(who, a)]  # a sponsor's own (maybe none)
    listed.sort(key=lambda a: (a.status == "decommissioned", a.name))
    users = {u.id: u for u in await runtime.identity_store.list_users(who.tenant.id)}
    seen = await runtime.audit_store.last_event_times(
        who.tenant.id, [a.id for a in listed], ACTIVITY
    )
    return render(request, who, "agents.html", title="Agents", agents=listed, users=users,
                  seen=seen)  # fmt: skip


@router.get("/{agent_id}")
async def one(request: Request, agent_id: str) -> Response:
    who = await viewer(request)
    agent = await _agent(request, who, agent_id)
    return render(request, who, "agent.html", title=f"Agent {agent.name}",
                  **await _details(request, who, agent))  # fmt: skip


async def _details(request: Request, who: Viewer, agent: Client) -> dict[str, Any]:
    runtime = runtime_of(request)
    tenant_id = who.tenant.id
    now = runtime.clock.now()
    users = {u.id: u for u in await runtime.identity_store.list_users(tenant_id)}
    store = runtime.audit_store
    decisions = await store.search(
        AuditQuery(tenant_id=tenant_id, agent_id=agent.id, type="decision.made", limit=RECENT)
    )
    since = (int(now // chart.HOUR) - CHART_HOURS + 1) * chart.HOUR
    counts = await store.decisions_per_hour(tenant_id, agent.id, since * 1_000_000)
    hours = chart.hours(counts, now, CHART_HOURS)
    seen = await store.last_event_times(tenant_id, [agent.id], ACTIVITY)
    limits = await runtime.policies(cid(request)).list_limits(tenant_id)
    title = f"Decisions of {agent.name} per hour, last {CHART_HOURS} hours"
    svg = chart.svg(hours, title=title, chart_id="activity")
    return {
        "agent": agent,
        "sponsor": users.get(agent.sponsor_id or ""),
        "users": users,
        "last_seen": seen.get(agent.id),
        "secrets": sorted(agent.secrets, key=lambda s: s.created_at, reverse=True),
        "kids": [str(k.get("kid") or "(no kid)") for k in (agent.jwks or {}).get("keys", [])],
        "limits": _limits(agent, limits, users),
        "decisions": [_decision(e, users) for e in decisions],
        "chart": Markup(svg),  # noqa: S704 (chart.svg escapes every text it draws)
        "hours": [h for h in hours if h.total],
        "totals": chart.totals(hours),
        "series": chart.SERIES,
        "chart_hours": CHART_HOURS,
        "offered": _offered(who, agent),
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class LimitRow:
    limit: Limit
    own: bool  # the agent's own (else a tenant default)
    for_user: str
    what: str


def _limits(agent: Client, limits: list[Limit], users: dict[str, User]) -> list[LimitRow]:
    """The agent's own limits, then the tenant defaults that its own do not replace (the
    same user, class, kind and window: see `valetkey.policy.limits`)."""
    own = [lim for lim in limits if lim.agent_id == agent.id]
    taken = {lim.dimension() for lim in own}
    defaults = [lim for lim in limits if lim.agent_id is None and lim.dimension() not in taken]
    rows = []
    for lim in (*own, *defaults):
        if lim.user_id is None:
            for_user = "all its users together"
        elif lim.user_id == EACH_USER:
            for_user = "each user separately"
        else:
            user = users.get(lim.user_id)
            for_user = user.email if user else lim.user_id
        if lim.kind == "budget":
            what = f"a budget of {lim.maximum} per {lim.per}"
        else:
            what = f"{lim.maximum} per {lim.per}"
        rows.append(LimitRow(lim, lim.agent_id is not None, for_user, what))
    return rows


@dataclass(frozen=True, slots=True)
class DecisionRow:
    ts: float
    decision: str
    action: str
    resource: str
    user: str
    why: str


def _decision(event: StoredEvent, users: dict[str, User]) -> DecisionRow:
    data = event.data
    raw_intent, raw_reasons = data.get("intent"), data.get("reasons")
    intent: dict[str, Any] = raw_intent if isinstance(raw_intent, dict) else {}
    reasons: list[Any] = raw_reasons if isinstance(raw_reasons, list) else []
    why = "; ".join(str(r.get("message") or r.get("code") or "") for r in reasons
                    if isinstance(r, dict))  # fmt: skip
    user = users.get(event.user_id or "")
    return DecisionRow(
        event.ts_us / 1_000_000, str(event.decision or data.get("decision") or "?"),
        str(intent.get("action", "")), str(intent.get("resource", "")),
        user.email if user else (event.user_id or ""), why or (event.reason or ""),
    )  # fmt: skip


@router.get("/{agent_id}/{slug}")
async def confirm(request: Request, agent_id: str, slug: str) -> Response:
    """What the change does, and the button that does it."""
    who = await viewer(request)
    verb = _verb(slug)
    agent = await _agent(request, who, agent_id)
    if not _may(who, verb, agent):
        raise Forbidden(f"only an admin may {verb.label.lower()} an agent")
    if (slug, verb) not in _offered(who, agent):
        raise Conflict(f"agent is {agent.status}; {verb.label.lower()} is not possible now")
    grace = span(runtime_of(request).settings.secret_grace)
    return render(
        request, who, "agent_confirm.html", title=f"{verb.label} {agent.name}?", agent=agent,
        slug=slug, verb=verb, consequence=verb.consequence.format(grace=grace),
    )  # fmt: skip


@router.post("/{agent_id}/rotate")
async def rotate(request: Request, agent_id: str) -> Response:
    """A new secret, on this response only; the previous ones expire after the grace."""
    who = await viewer(request)
    await form(request)
    agent = await _agent(request, who, agent_id)
    if not _may(who, VERBS["rotate"], agent):
        raise Forbidden("only an admin may rotate an agent's secret")
    if not _has_secret(agent):
        raise Conflict("this agent authenticates without a client secret")
    updated, secret = (
        await runtime_of(request).identity(cid(request)).rotate_secret(agent.id, who.tenant.id)
    )
    new = updated.secrets[-1]
    previous = [s for s in updated.secrets if s.id != new.id and s.expires_at]
    until = max((s.expires_at or 0.0 for s in previous), default=None)
    return render(request, who, "agent_secret.html", title=f"New secret for {agent.name}",
                  agent=updated, secret=secret, secret_id=new.id, until=until)  # fmt: skip


@router.post("/{agent_id}/{slug}")
async def change(request: Request, agent_id: str, slug: str) -> Response:
    who = await viewer(request)
    await form(request)
    verb = _verb(slug)
    agent = await _agent(request, who, agent_id)
    if not _may(who, verb, agent):
        raise Forbidden(f"only an admin may {verb.label.lower()} an agent")
    service = runtime_of(request).identity(cid(request))
    action = {"suspend": service.suspend_agent, "resume": service.resume_agent,
              "decommission": service.decommission_agent}.get(slug)  # fmt: skip
    if action is None:
        raise NotFound(f"no such change {slug[:32]!r}")
    await action(agent.id, who.tenant.id)
    return redirect(f"/console/agents/{agent.id}", verb.done)
