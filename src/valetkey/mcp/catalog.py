"""What the MCP gateway offers a caller: the tenant's upstreams (kept per process until the
tenant's version moves), each upstream's tools (fetched with the caller's credential and
kept 60 s per upstream and credential owner), the tenant actions for those tools (kept in
step with their classes), and which tools this caller may see.

Actions: every tool is the action `mcp:UPSTREAM.TOOL` in its class, needing `mcp:<class>`.
The gateway registers a tool's action when it first sees the tool and moves it when the
tool's class changes (its annotations, or an admin's override), in one transaction with an
`mcp.actions_registered` audit event and a bump of the tenant's version. Actions are never
removed here: a pushed policy may name them.

Visibility: a tool is listed when the decision point's structural checks would not deny
it — the action is known, the token holds its scope, and, under a mandate, the mandate
names the action or its class (and covers the resource when the resource depends on no
argument). Limits and Cedar policies are left to the call: they depend on the arguments
and on time."""

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol

import mcp_types as types

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock
from valetkey.identity.mandates import covered
from valetkey.identity.models import Resource, Tenant
from valetkey.mcp.credentials import Credential, outbound_headers
from valetkey.mcp.templates import PLACEHOLDER
from valetkey.mcp.tools import UpstreamTool, exposable
from valetkey.mcp.upstream_client import UpstreamClient
from valetkey.mcp.upstreams import Upstream, action_def
from valetkey.oauth.context import ClientContext, TenantCache
from valetkey.policy.decision import ActionDef, Caller, DecisionPoint
from valetkey.policy.intent import Intent

log = logging.getLogger("valetkey.mcp")
TOOLS_TTL = 60.0
MAX_CACHED_LISTS = 10_000


class UpstreamList(Protocol):
    async def list(self, tenant_id: str) -> list[Upstream]: ...


class ActionSync(Protocol):
    async def sync_actions(
        self, tenant_id: str, wanted: Sequence[ActionDef],
        event: Callable[[Sequence[ActionDef]], AuditEvent],
    ) -> int:  # fmt: skip
        """Upsert the actions that differ, with the event naming them (bumping the tenant's
        version when any did); the tenant's version as of then."""
        ...


Resources = Callable[[ClientContext], Awaitable[tuple[Resource, ...]]]


class Catalog:
    def __init__(
        self, upstreams: UpstreamList, actions: ActionSync, point: DecisionPoint,
        resources: Resources, cache: TenantCache, client: UpstreamClient, clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._upstreams = upstreams
        self._actions = actions
        self._point = point
        self._resources = resources
        self._cache = cache
        self._client = client
        self._clock = clock
        self._monotonic = monotonic
        self._lists: dict[tuple[str, ...], tuple[float, list[types.Tool]]] = {}

    async def upstreams(self, tenant: Tenant) -> dict[str, Upstream]:
        async def load() -> dict[str, Upstream]:
            return {u.name: u for u in await self._upstreams.list(tenant.id)}

        return await self._cache.get(tenant, "mcp_upstreams", load)

    async def tools(
        self, caller: Caller, upstream: Upstream, credential: Credential | None, cid: str
    ) -> list[UpstreamTool]:
        """The upstream's tools (that ValetKey can name), from the cache or fetched now."""
        owner = credential.slot.connection.owner_id if credential else "-"
        key = (upstream.id, upstream.url, owner)
        now = self._monotonic()
        found = self._lists.get(key)
        if found is None or found[0] <= now:
            if credential is not None:
                await credential.token()  # a vault failure is the caller's, not the upstream's
            auth = credential.auth() if credential else None
            listed = await self._client.list_tools(
                upstream.url, outbound_headers(caller, cid), auth
            )
            if len(self._lists) >= MAX_CACHED_LISTS:
                self._lists = {k: v for k, v in self._lists.items() if v[0] > now}
            found = (now + TOOLS_TTL, listed)
            self._lists[key] = found
        return [UpstreamTool(upstream, t) for t in found[1] if exposable(t)]

    async def registered(self, caller: Caller, items: Sequence[UpstreamTool], cid: str) -> Caller:
        """Make sure each tool's action exists in its class; the caller with the tenant's
        new version when that took a write (so this request sees the new actions)."""
        wanted: list[ActionDef] = []
        for item in items:
            have = await self._point.action(caller.tenant, item.action)
            want = action_def(item.upstream.name, item.tool.name, item.klass)
            if have != want:
                wanted.append(want)
        if not wanted:
            return caller

        def event(changed: Sequence[ActionDef]) -> AuditEvent:
            return AuditEvent(
                "mcp.actions_registered", caller.tenant.id, self._clock.now(), cid,
                agent_id=caller.agent.id, jti=caller.jti,
                data={"actions": [{"name": a.name, "class": a.klass, "scope": a.scope}
                                  for a in changed]},
            )  # fmt: skip

        version = await self._actions.sync_actions(caller.tenant.id, wanted, event)
        if version <= caller.tenant.version:
            return caller
        return replace(caller, tenant=replace(caller.tenant, version=version))

    async def visible(self, caller: Caller, ctx: ClientContext, item: UpstreamTool) -> bool:
        template = item.template
        fixed = not PLACEHOLDER.search(template)
        probe = Intent(item.action, template if fixed else f"mcp:{item.upstream.name}/*")
        structural = await self._point.structural(
            replace(caller, mandate=None), probe, await self._resources(ctx)
        )
        if structural.decision != "allow":
            return False
        mandate = caller.mandate
        if mandate is None:
            return True
        if not (covered(item.action, mandate.actions) or covered(item.klass, mandate.actions)):
            return False
        return not fixed or covered(template, mandate.locations)
