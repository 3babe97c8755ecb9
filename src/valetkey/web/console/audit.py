"""The audit log for admins: a filterable log read page by page with a keyset cursor (no
OFFSET: every page is a few index reads, however long the log), one task's timeline by
its correlation id, the chain's head and an on-demand verification, and export of what a
filter selects as JSON Lines or CSV, streamed page by page.

Everything is the signed-in admin's tenant's: another tenant's agent, user or correlation
id simply matches nothing. Verifying a chain reads every event of the tenant, so it runs
when an admin asks, in a thread of its own (the server keeps serving), and the page shows
the last result and when it was had.
"""

import asyncio
import csv
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from valetkey.audit import service
from valetkey.audit.chain import Verification
from valetkey.audit.events import DECISIONS, AuditEvent, AuditQuery, StoredEvent
from valetkey.clock import to_datetime
from valetkey.errors import NotFound
from valetkey.identity.models import Client, User
from valetkey.runtime import Runtime
from valetkey.web.console.base import (
    ADMIN,
    HEADERS,
    Viewer,
    cid,
    form,
    plain_action,
    redirect,
    render,
    runtime_of,
    same_origin,
    viewer,
)

router = APIRouter(prefix="/console/audit", include_in_schema=False)
_log = logging.getLogger(__name__)
PAGE = 50
EXPORT_PAGE = 1000
TIMELINE_MAX = 500
WAIT_FOR_VERIFY = 5.0  # seconds a POST waits for a verification before showing "running"
_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_CURSOR = re.compile(r"^[0-9]{1,18}$")
_EXPORT_COLUMNS = (
    "seq", "time", "type", "outcome", "decision", "agent_id", "user_id", "correlation_id",
    "reason", "jti", "id", "data", "prev_hash", "hash",
)  # fmt: skip
# The types the filter suggests (any other well-formed type may be typed in).
KNOWN_TYPES = (
    "token.issued", "token.exchanged", "token.refreshed", "token.refused", "token.revoked",
    "decision.made", "approval.requested", "approval.granted", "approval.denied",
    "approval.used", "approval.expired", "gateway.called", "mcp.tool_called",
    "authorization.granted", "consent.denied", "connection.connected",
    "connection.refreshed", "connection.needs_reauth", "connection.revoked",
    "delegation.created", "delegation.revoked", "agent.created", "agent.suspended",
    "user.logged_in", "user.login_failed", "policy.pushed", "audit.exported",
)  # fmt: skip


# filters ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Filters:
    """The filter form's values as typed (echoed back into the form and the links)."""

    agent: str = ""
    user: str = ""
    correlation: str = ""
    type: str = ""
    decision: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, request: Request) -> "Filters":
        q = request.query_params
        return cls(
            agent=q.get("agent", "").strip()[:128], user=q.get("user", "").strip()[:320],
            correlation=q.get("correlation", "").strip()[:128],
            type=q.get("type", "").strip()[:64], decision=q.get("decision", "").strip()[:32],
            since=q.get("since", "").strip()[:32], until=q.get("until", "").strip()[:32],
        )  # fmt: skip

    def pairs(self) -> list[tuple[str, str]]:
        names = ("agent", "user", "correlation", "type", "decision", "since", "until")
        return [(n, getattr(self, n)) for n in names if getattr(self, n)]

    def but(self, **changes: str) -> "Filters":
        return replace(self, **changes)

    def link(self, path: str = "/console/audit", **extra: str) -> str:
        pairs = self.pairs() + [(k, v) for k, v in extra.items() if v]
        return path + ("?" + urlencode(pairs) if pairs else "")

    @property
    def any(self) -> bool:
        return bool(self.pairs())


@dataclass
class Resolved:
    """Filters turned into a query of the viewer's tenant, or the reasons they cannot be."""

    query: AuditQuery
    errors: dict[str, str] = field(default_factory=dict)
    empty: str = ""  # a filter that matches nothing in this tenant, said why


def _moment(text: str) -> float:
    """A `datetime-local` value (minutes or seconds), as UTC."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,6})?)?", text):
        raise ValueError(text)
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def _resolve(
    runtime: Runtime, who: Viewer, filters: Filters, agents: list[Client]
) -> Resolved:
    errors: dict[str, str] = {}
    since = until = None
    for name, text in (("since", filters.since), ("until", filters.until)):
        if text:
            try:
                value = _moment(text)
            except ValueError:
                errors[name] = f"“{text}” is not a date and time (YYYY-MM-DDTHH:MM, UTC)."
                continue
            since, until = (value, until) if name == "since" else (since, value)
    if since is not None and until is not None and since >= until:
        errors["until"] = "“To” must be after “From”."
    if filters.decision and filters.decision not in DECISIONS:
        errors["decision"] = "Choose allow, deny or approval required."
    if filters.type and not _TYPE.match(filters.type):
        errors["type"] = "An event type looks like token.issued or decision.made."
    query = AuditQuery(
        tenant_id=who.tenant.id, correlation_id=filters.correlation or None,
        type=filters.type or None, decision=filters.decision or None, since=since,
        until=until, limit=PAGE,
    )  # fmt: skip
    resolved = Resolved(query, errors)
    if filters.agent:
        named = {a.name: a.id for a in agents}
        resolved.query = replace(query, agent_id=named.get(filters.agent, filters.agent))
        query = resolved.query
    if filters.user:
        user_id = filters.user if filters.user.startswith("usr_") else None
        if user_id is None:
            try:
                found = await runtime.identity_store.find_user(who.tenant.id, filters.user.lower())
                user_id = found.id
            except NotFound:
                resolved.empty = f"No user {filters.user} in {who.tenant.name}."
        resolved.query = replace(query, user_id=user_id)
    return resolved


# rows ------------------------------------------------------------------------------------
BADGES = {"allow": ("ok", "allowed"), "deny": ("bad", "denied"),
          "approval_required": ("warn", "needs approval")}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Row:
    """One event as the pages show it."""

    event: StoredEvent
    agent: str
    user: str
    badge: tuple[str, str]
    sentence: str
    linked: bool = False  # on the timeline: found through its approval, not its task's id
    decider: str = ""  # who decided an approval

    @property
    def iso(self) -> str:
        return _stamp(self.event.ts_us).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @property
    def when(self) -> str:
        return _stamp(self.event.ts_us).strftime("%Y-%m-%d %H:%M:%S UTC")

    @property
    def short_reason(self) -> str:
        reason = self.event.reason or ""
        return reason if len(reason) <= 90 else reason[:89] + "…"

    @property
    def data(self) -> list[tuple[str, str]]:
        return [(k, orjson.dumps(v).decode()) for k, v in self.event.data.items()]

    @property
    def intent(self) -> dict[str, Any]:
        found = self.event.data.get("intent")
        return found if isinstance(found, dict) else {}


def _stamp(ts_us: int) -> datetime:
    return to_datetime(ts_us / 1e6)


def _badge(event: StoredEvent) -> tuple[str, str]:
    if event.decision:
        return BADGES[event.decision]
    if event.type == "approval.granted":
        return "ok", "approved"
    if event.type == "approval.denied":
        return "bad", "denied"
    return ("muted", "success") if event.outcome == "success" else ("bad", "failure")


def _sentence(e: StoredEvent, agent: str, user: str) -> str:
    """What happened, in plain words (the timeline's line for the event)."""
    d = e.data
    who = agent or "An agent"
    intent = d.get("intent") if isinstance(d.get("intent"), dict) else {}
    action = plain_action(str(intent.get("action", ""))) if intent else "an action"
    verdicts = {"allow": "allowed", "deny": "denied",
                "approval_required": "held for a person's approval"}  # fmt: skip
    words = {
        "token.issued": f"{who} got an access token for {d.get('aud', 'a resource')}",
        "token.exchanged": f"{who} got a token to act for {user or 'a user'} at "
        f"{d.get('aud', 'a resource')}",
        "token.refreshed": f"{who} refreshed its token",
        "token.refused": f"{who} was refused a token",
        "token.revoked": "A token was revoked",
        "decision.made": f"ValetKey {verdicts.get(str(d.get('decision')), 'decided on')}: {action}",
        "approval.requested": f"{who} asked a person to approve: {action}",
        "approval.granted": f"A person approved: {action}",
        "approval.denied": f"A person denied: {action}",
        "approval.used": f"{who} used the approval",
        "approval.expired": "The approval request expired unanswered",
        "gateway.called": f"{who} called {d.get('provider', 'a platform')} through the "
        f"gateway: {d.get('method', '')} {d.get('path', '')} → {d.get('status') or 'no answer'}",
        "mcp.tool_called": f"{who} called the tool {d.get('tool', '')} of "
        f"{d.get('upstream', 'an MCP server')} → {d.get('status') or 'refused'}",
        "authorization.granted": f"{user or 'A user'} let {who} act for them",
        "consent.denied": f"{user or 'A user'} refused to let {who} act for them",
        "connection.refreshed": f"The {d.get('provider', '')} connection's token was refreshed",
        "connection.needs_reauth": f"The {d.get('provider', '')} connection must be "
        "authorized again",
        "audit.exported": f"{user or 'An admin'} exported the audit log",
    }
    if e.type in words:
        return words[e.type].replace("  ", " ")
    noun, _, verb = e.type.partition(".")
    return f"{noun.replace('_', ' ').capitalize()} {verb.replace('_', ' ')}".strip()


class Names:
    """Agent (and service client) names and user emails of the viewer's tenant."""

    def __init__(self, clients: list[Client], users: list[User]) -> None:
        self.clients = {c.id: c.name for c in clients}
        self.users = {u.id: u.email for u in users}

    @classmethod
    async def load(cls, runtime: Runtime, tenant_id: str) -> "Names":
        store = runtime.identity_store
        agents = await store.list_clients(tenant_id, "agent")
        services = await store.list_clients(tenant_id, "service")
        return cls(agents + services, await store.list_users(tenant_id))

    def row(self, event: StoredEvent, linked: bool = False) -> Row:
        agent = self.clients.get(event.agent_id or "", event.agent_id or "")
        user = self.users.get(event.user_id or "", event.user_id or "")
        by = str(event.data.get("decided_by") or "")
        return Row(event, agent, user, _badge(event), _sentence(event, agent, user), linked,
                   self.users.get(by, by))  # fmt: skip


# the log ---------------------------------------------------------------------------------
@router.get("")
async def log(request: Request) -> Response:
    who = await viewer(request, ADMIN)
    runtime = runtime_of(request)
    filters = Filters.of(request)
    agents = await runtime.identity_store.list_clients(who.tenant.id, "agent")
    resolved = await _resolve(runtime, who, filters, agents)
    before, after = request.query_params.get("before", ""), request.query_params.get("after", "")
    for name, value in (("before", before), ("after", after)):
        if value and not _CURSOR.match(value):
            resolved.errors[name] = "That page link is damaged; start from the newest events."
    rows: list[Row] = []
    newer = older = first = ""
    if not resolved.errors and not resolved.empty:
        page, newer_exists, older_exists = await _page(runtime, resolved.query, before, after)
        names = await Names.load(runtime, who.tenant.id)
        rows = [names.row(e) for e in page]
        if rows and older_exists:
            older = filters.link(before=str(rows[-1].event.seq))
        if rows and newer_exists:
            newer = filters.link(after=str(rows[0].event.seq))
            first = filters.link()
        if not rows and (before or after):
            first = filters.link()
    status = 400 if resolved.errors else 200
    return render(
        request, who, "audit.html", status, title="Audit log", filters=filters,
        errors=resolved.errors, empty=resolved.empty, rows=rows, newer=newer, older=older,
        first=first, agents=agents,
        agent_known=any(a.id == resolved.query.agent_id for a in agents),
        types=KNOWN_TYPES, decisions=DECISIONS,
        head=await runtime.audit_store.head(who.tenant.id),
        check=_checks(request).get(who.tenant.id),
        export_jsonl=filters.link("/console/audit/export", format="jsonl"),
        export_csv=filters.link("/console/audit/export", format="csv"),
    )  # fmt: skip


async def _page(
    runtime: Runtime, query: AuditQuery, before: str, after: str
) -> tuple[list[StoredEvent], bool, bool]:
    """One page of events (newest first) at a cursor, and whether newer and older ones
    exist. "Newer" from the second page lands on the first page as it is now."""
    store = runtime.audit_store
    if before:
        found = await store.search(replace(query, limit=PAGE + 1, before_seq=int(before)))
        return found[:PAGE], True, len(found) > PAGE
    if after:  # read upwards from the cursor: the extra one is the newest
        found = await store.search(replace(query, limit=PAGE + 1, after_seq=int(after)))
        if len(found) > PAGE:
            return found[-PAGE:], True, True
    found = await store.search(replace(query, limit=PAGE + 1))
    return found[:PAGE], False, len(found) > PAGE


# one task --------------------------------------------------------------------------------
@router.get("/task/{correlation_id:path}")
async def task(request: Request, correlation_id: str) -> Response:
    who = await viewer(request, ADMIN)
    runtime = runtime_of(request)
    correlation_id = correlation_id[:128]
    store = runtime.audit_store
    events = await store.task(who.tenant.id, correlation_id, TIMELINE_MAX)
    names = await Names.load(runtime, who.tenant.id)
    rows = [names.row(e) for e in events]
    rows += [names.row(e, linked=True) for e in await _decided(runtime, who, events)]
    rows.sort(key=lambda r: r.event.seq)
    agents = sorted({r.agent for r in rows if r.agent and not r.linked})
    users = sorted({r.user for r in rows if r.user and not r.linked})
    return render(
        request, who, "audit_timeline.html", 200 if rows else 404, title="Task timeline",
        correlation_id=correlation_id, rows=rows, agents=agents, users=users,
        truncated=len(events) == TIMELINE_MAX,
        back=Filters(correlation=correlation_id).link(),
    )  # fmt: skip


async def _decided(runtime: Runtime, who: Viewer, events: list[StoredEvent]) -> list[StoredEvent]:
    """A person decides an approval in their own request (another correlation id): the
    decisions on this task's approvals, found by the approval's own record of when it was
    decided (a time range is a range of the chain: a few index seeks however busy the
    tenant), or, for one that expired, in the chain after its request."""
    requested = {e.data.get("approval_id"): e.seq for e in events
                 if e.type == "approval.requested"}  # fmt: skip
    here = {e.id for e in events}
    found: list[StoredEvent] = []
    for approval_id, seq in requested.items():
        approval = await runtime.approval_store.get_approval(str(approval_id))
        if approval is None or approval.tenant_id != who.tenant.id:
            continue
        if approval.decided_at is not None:
            kind = "approval.denied" if approval.status == "denied" else "approval.granted"
            at = approval.decided_at
            query = AuditQuery(tenant_id=who.tenant.id, type=kind, limit=200, after_seq=seq,
                               since=at - 5, until=at + 5)  # fmt: skip
        elif approval.status == "expired":
            query = AuditQuery(tenant_id=who.tenant.id, type="approval.expired", after_seq=seq,
                               limit=200)  # fmt: skip
        else:
            continue
        found += [e for e in await runtime.audit_store.search(query)
                  if e.data.get("approval_id") == approval_id and e.id not in here]  # fmt: skip
    return found


# chain verification ----------------------------------------------------------------------
@dataclass
class Check:
    """The last verification of one tenant's chain (kept in this process's memory)."""

    started: float
    finished: float | None = None
    result: Verification | None = None
    error: str = ""
    job: "asyncio.Task[None] | None" = None

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def took(self) -> str:
        return f"{(self.finished or self.started) - self.started:.1f} s"


def _checks(request: Request) -> dict[str, Check]:
    state = request.app.state
    if not hasattr(state, "console_audit_checks"):
        state.console_audit_checks = {}
    checks: dict[str, Check] = state.console_audit_checks
    return checks


def _verify_in_thread(runtime: Runtime, tenant_id: str) -> Verification:
    """`audit.service.verify` on a connection of its own, in a thread with its own event
    loop: hashing a million events must not hold up the server's requests."""

    async def go() -> Verification:
        own = await Runtime.open(runtime.settings, migrate=False)
        try:
            return await service.verify(own.audit_store, [tenant_id])
        finally:
            await own.close()

    return asyncio.run(go())


async def _run_check(runtime: Runtime, tenant_id: str, check: Check) -> None:
    try:
        check.result = await asyncio.to_thread(_verify_in_thread, runtime, tenant_id)
    except Exception as exc:
        _log.exception("verifying the audit chain of %s failed", tenant_id)
        check.error = f"the verification could not run: {type(exc).__name__}"
    finally:
        check.finished = time.time()


@router.post("/verify")
async def verify(request: Request) -> Response:
    who = await viewer(request, ADMIN)
    await form(request)
    checks = _checks(request)
    check = checks.get(who.tenant.id)
    if check is None or not check.running:
        check = Check(time.time())
        checks[who.tenant.id] = check
        check.job = asyncio.create_task(_run_check(runtime_of(request), who.tenant.id, check))
    if check.job is not None:
        await asyncio.wait([check.job], timeout=WAIT_FOR_VERIFY)
    return redirect("/console/audit#chain")


# export ----------------------------------------------------------------------------------
@router.get("/export")
async def export(request: Request) -> Response:
    who = await viewer(request, ADMIN)
    same_origin(request)  # it writes an audit event: only from the console's own link
    runtime = runtime_of(request)
    filters = Filters.of(request)
    kind = request.query_params.get("format", "jsonl")
    agents = await runtime.identity_store.list_clients(who.tenant.id, "agent")
    resolved = await _resolve(runtime, who, filters, agents)
    if kind not in ("jsonl", "csv"):
        resolved.errors["format"] = "Export as jsonl or csv."
    if resolved.errors:
        return render(request, who, "audit.html", 400, title="Audit log", filters=filters,
                      errors=resolved.errors, empty="", rows=[], newer="", older="", first="",
                      agents=agents, agent_known=False, types=KNOWN_TYPES, decisions=DECISIONS,
                      head=await runtime.audit_store.head(who.tenant.id),
                      check=_checks(request).get(who.tenant.id), export_jsonl="",
                      export_csv="")  # fmt: skip
    await request.app.state.audit.record(AuditEvent(
        "audit.exported", who.tenant.id, runtime.clock.now(), cid(request),
        user_id=who.user.id, data={"format": kind, "filters": dict(filters.pairs())},
    ))  # fmt: skip
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"audit-{who.tenant.name}-{stamp}.{kind}"
    media = "application/x-ndjson" if kind == "jsonl" else "text/csv; charset=utf-8"
    body = _jsonl(runtime, resolved) if kind == "jsonl" else _csv(runtime, resolved)
    headers = {**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(body, media_type=media, headers=headers)


async def _pages(runtime: Runtime, resolved: Resolved) -> AsyncIterator[list[StoredEvent]]:
    """Every event the filters select, newest first, a page at a time (keyset cursor)."""
    if resolved.empty:
        return
    query = replace(resolved.query, limit=EXPORT_PAGE)
    while True:
        page = await runtime.audit_store.search(query)
        if page:
            yield page
        if len(page) < EXPORT_PAGE:
            return
        query = replace(query, before_seq=page[-1].seq)


async def _jsonl(runtime: Runtime, resolved: Resolved) -> AsyncIterator[bytes]:
    async for page in _pages(runtime, resolved):
        yield b"".join(orjson.dumps(e.to_json()) + b"\n" for e in page)


def _cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula is quoted with `'`."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def _csv(runtime: Runtime, resolved: Resolved) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_EXPORT_COLUMNS)
    async for page in _pages(runtime, resolved):
        for event in page:
            data = event.to_json()
            data["decision"] = event.decision
            data["data"] = orjson.dumps(event.data).decode()
            writer.writerow([_cell(data[c]) for c in _EXPORT_COLUMNS])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()
