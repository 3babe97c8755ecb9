"""The MCP gateway's two operations, for an authenticated caller.

`tools/list`: the tenant's upstreams' tools as ValetKey's own (`UPSTREAM__TOOL`), only
those this caller may use (see `catalog`). An upstream that cannot be reached, or whose
credential the caller lacks, contributes nothing.

`tools/call`: every call is an intent — action `mcp:UPSTREAM.TOOL`, its class, the resource
from the tool's template over the arguments, the arguments in the context — decided by the
same decision point as `/v1/authorize` (scope, mandate, limits, Cedar, approvals). A deny
or a pending approval is a tool error the model can read; an allowed call is forwarded to
the upstream with the caller's platform token from the vault, and its result comes back
(sanitised when the tool or upstream says so). Every call is audited as `mcp.tool_called`
— the decision itself is `decision.made`.

Approvals: the approval id may travel in the call's `_meta` (`valetkey/approval`); without
it, a granted, unused approval for exactly this agent, user, intent and arguments is used.
Either way it is spent once. The approval is bound to the arguments through their SHA-256
in the intent's context, which the approval keeps."""

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import mcp_types as types

from valetkey.audit.events import AuditEvent, Outcome
from valetkey.audit.writer import AuditSink
from valetkey.clock import Clock
from valetkey.mcp.catalog import Catalog
from valetkey.mcp.credentials import (
    ConnectionFinder,
    Credential,
    ProviderFinder,
    Refused,
    TokenSource,
    credential_for,
    outbound_headers,
)
from valetkey.mcp.templates import TemplateError
from valetkey.mcp.tools import (
    APPROVAL_META,
    UpstreamTool,
    approved_digest,
    error_result,
    intent_for,
    refusal_text,
    removed_header,
    sanitized,
    split_name,
)
from valetkey.mcp.upstream_client import UpstreamClient
from valetkey.mcp.upstreams import Upstream
from valetkey.oauth.context import ClientContext
from valetkey.policy.approvals import Approval, intent_hash
from valetkey.policy.authorizer import Authorizer
from valetkey.policy.decision import Caller, Decision
from valetkey.policy.intent import Intent

log = logging.getLogger("valetkey.mcp")


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Who is calling `/mcp`, as the web layer verified it for this very HTTP request."""

    caller: Caller
    ctx: ClientContext
    correlation_id: str


class ApprovalLookup(Protocol):
    async def get_approval(self, approval_id: str) -> Approval | None: ...


class GrantedApprovals(Protocol):
    async def find_granted(
        self, tenant_id: str, agent_id: str, delegation_key: str | None, digest: str, now: float
    ) -> list[Approval]:
        """Approved, unexpired, unused approvals for this agent, chain and intent hash."""
        ...


@dataclass
class _Call:
    """What one `tools/call` learned on its way, for its audit event."""

    upstream: str
    tool: str
    started: float
    intent: Intent | None = None
    decision: Decision | None = None
    approval_id: str | None = None
    connection_id: str | None = None
    status: str | None = None  # the upstream's outcome: ok | tool_error | unavailable | timeout
    sanitized: str | None = None


class ToolGateway:
    def __init__(self, catalog: Catalog, authorizer: Authorizer, providers: ProviderFinder,
                 connections: ConnectionFinder, vault: TokenSource, approvals: ApprovalLookup,
                 granted: GrantedApprovals, audit: AuditSink, client: UpstreamClient,
                 clock: Clock, issuer: str) -> None:  # fmt: skip
        self._catalog = catalog
        self._authorizer = authorizer
        self._providers = providers
        self._connections = connections
        self._vault = vault
        self._approvals = approvals
        self._granted = granted
        self._audit = audit
        self._client = client
        self._clock = clock
        self._issuer = issuer

    async def _credential(self, caller: Caller, upstream: Upstream, cid: str) -> Credential | None:
        return await credential_for(caller, upstream, self._providers, self._connections,
                                    self._vault, self._issuer, cid)  # fmt: skip

    # tools/list ------------------------------------------------------------------------------
    async def list_tools(self, who: Authenticated) -> list[types.Tool]:
        caller = who.caller
        upstreams = (await self._catalog.upstreams(caller.tenant)).values()
        fetched = await asyncio.gather(*(self._offered(who, u) for u in upstreams))
        listed: list[types.Tool] = []
        for items in fetched:
            caller = await self._catalog.registered(caller, items, who.correlation_id)
            for item in items:
                if await self._catalog.visible(caller, who.ctx, item):
                    listed.append(item.listed())
        return listed

    async def _offered(self, who: Authenticated, upstream: Upstream) -> list[UpstreamTool]:
        """One upstream's tools for this caller; none when it cannot be asked (no
        credential, unreachable): an upstream that is down must not hide the others."""
        caller, cid = who.caller, who.correlation_id
        try:
            credential = await self._credential(caller, upstream, cid)
            return await self._catalog.tools(caller, upstream, credential, cid)
        except Refused as exc:
            log.info("mcp: %s not listed for %s: %s", upstream.name, caller.agent.id, exc)
        except Exception:
            log.warning("mcp: listing the tools of %s failed", upstream.name, exc_info=True)
        return []

    # tools/call ------------------------------------------------------------------------------
    async def call_tool(
        self, who: Authenticated, name: str, arguments: dict[str, Any],
        meta: Mapping[str, Any] | None,
    ) -> types.CallToolResult:  # fmt: skip
        parts = split_name(name)
        upstream_name, tool_name = parts if parts else ("", name[:128])
        call = _Call(upstream_name, tool_name[:128], time.perf_counter())
        try:
            result = await self._call(who, call, name, arguments, meta or {})
        except Refused as refusal:
            await self._record(who, call, refusal)
            return error_result(
                f"ValetKey did not make this call: {refusal.code}: {refusal.message}",
                refused=refusal.code,
            )
        await self._record(who, call, None)
        return result

    async def _call(self, who: Authenticated, call: _Call, name: str, arguments: dict[str, Any],
                    meta: Mapping[str, Any]) -> types.CallToolResult:  # fmt: skip
        caller, cid = who.caller, who.correlation_id
        upstream = (await self._catalog.upstreams(caller.tenant)).get(call.upstream)
        if upstream is None:
            raise Refused("unknown_tool", f"there is no tool {name[:160]!r}; list the tools")
        credential = await self._credential(caller, upstream, cid)
        call.connection_id = credential.connection_id if credential else None
        try:
            items = await self._catalog.tools(caller, upstream, credential, cid)
        except Refused:
            raise
        except Exception as exc:
            raise self._unreachable(upstream, credential, call, exc) from exc
        item = next((i for i in items if i.tool.name == call.tool), None)
        if item is None:
            raise Refused("unknown_tool", f"there is no tool {name[:160]!r}; list the tools")
        caller = await self._catalog.registered(caller, items, cid)
        try:
            call.intent = intent = intent_for(item, arguments)
        except TemplateError as exc:
            raise Refused("invalid_intent", str(exc)) from exc
        call.approval_id = await self._approval_for(caller, intent, meta)
        decision = await self._authorizer.decide(caller, who.ctx, intent, call.approval_id, cid)
        call.decision = decision
        if decision.decision != "allow":
            body = decision.to_json()
            return error_result(refusal_text(decision), decision=body)
        return await self._forward(caller, cid, item, credential, arguments, call)

    async def _approval_for(
        self, caller: Caller, intent: Intent, meta: Mapping[str, Any]
    ) -> str | None:
        """The approval this call presents: the one in `_meta`, else a granted one that
        was asked for exactly these arguments."""
        digest = intent.context.get("arguments_sha256")
        given = meta.get(APPROVAL_META)
        if given is not None:
            if not isinstance(given, str) or not 0 < len(given) <= 64:
                raise Refused("invalid_approval", f"_meta {APPROVAL_META!r} is an approval id")
            found = await self._approvals.get_approval(given)
            if (
                found is not None
                and found.tenant_id == caller.tenant.id
                and (approved_digest(found.intent) != digest)
            ):
                raise Refused("approval_mismatch", "the approval was given for other arguments")
            return given
        candidates = await self._granted.find_granted(
            caller.tenant.id, caller.agent.id, caller.delegation_key, intent_hash(intent),
            self._clock.now(),
        )  # fmt: skip
        return next((a.id for a in candidates if approved_digest(a.intent) == digest), None)

    async def _forward(self, caller: Caller, cid: str, item: UpstreamTool,
                       credential: Credential | None, arguments: dict[str, Any],
                       call: _Call) -> types.CallToolResult:  # fmt: skip
        upstream = item.upstream
        try:
            result = await self._client.call_tool(
                upstream.url, outbound_headers(caller, cid),
                credential.auth() if credential else None, item.tool.name, arguments,
            )  # fmt: skip
        except Exception as exc:
            raise self._unreachable(upstream, credential, call, exc) from exc
        call.status = "tool_error" if result.is_error else "ok"
        decided = call.decision.id if call.decision else None
        extra: dict[str, Any] = {"valetkey/decision_id": decided}
        if item.sanitizing:
            result, removed = sanitized(result)
            call.sanitized = extra["valetkey/sanitized"] = removed_header(removed)
        return result.model_copy(update={"meta": {**(result.meta or {}), **extra}})

    def _unreachable(
        self, upstream: Upstream, credential: Credential | None, call: _Call, exc: Exception
    ) -> Refused:
        if credential is not None and credential.failure is not None:
            return credential.failure  # the vault's, met inside the HTTP client
        timed_out = isinstance(exc, TimeoutError)
        call.status = "timeout" if timed_out else "unavailable"
        log.warning("mcp: %s on %s failed", call.tool, upstream.name, exc_info=not timed_out)
        if timed_out:
            return Refused(
                "upstream_timeout", f"the upstream {upstream.name!r} did not answer in time"
            )
        return Refused(
            "upstream_unavailable", f"the upstream {upstream.name!r} could not be reached or failed"
        )

    async def _record(self, who: Authenticated, call: _Call, refusal: Refused | None) -> None:
        """`mcp.tool_called`, durable before the answer goes out."""
        caller, decision = who.caller, call.decision
        forwarded = call.status is not None and refusal is None
        outcome: Outcome = "success" if forwarded and call.status == "ok" else "failure"
        reason = None
        if refusal is not None:
            reason = f"{refusal.code}: {refusal.message}"
        elif decision is not None and decision.decision != "allow":
            first = decision.reasons[0] if decision.reasons else None
            reason = f"{first.code}: {first.message}" if first else decision.decision
        elif call.status == "tool_error":
            reason = "the upstream's tool reported an error"
        approval = decision.approval if decision is not None else None
        await self._audit.record(AuditEvent(
            "mcp.tool_called", caller.tenant.id, self._clock.now(), who.correlation_id,
            outcome=outcome, reason=reason, agent_id=caller.agent.id,
            user_id=caller.user.id if caller.user else None, jti=caller.jti,
            data={"upstream": call.upstream, "tool": call.tool,
                  "action": call.intent.action if call.intent else None,
                  "resource": call.intent.resource if call.intent else None,
                  "decision_id": decision.id if decision else None,
                  "decision": decision.decision if decision else None,
                  "approval_id": approval["id"] if approval else call.approval_id,
                  "refused": refusal.code if refusal else None,
                  "connection_id": call.connection_id, "status": call.status,
                  "sanitized": call.sanitized,
                  "latency_ms": round((time.perf_counter() - call.started) * 1000, 2)},
        ))  # fmt: skip
