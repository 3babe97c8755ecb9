"""MCP upstreams: the tool servers a tenant's agents reach through ValetKey's `/mcp`, and
the admin's per-tool overrides, as an admin manages them (`valetkey mcp …`).

An upstream has a short name (its tools are listed as `NAME__TOOL`), a streamable-HTTP URL
(https; http only on loopback, as for providers), optionally the vault provider whose
connection supplies its credential, and whether its text results are sanitised. Adding
the first upstream registers the MCP gateway's audience, `{issuer}/mcp`, with one scope per
action class (`mcp:read` … `mcp:spend`). Every change bumps the tenant's version, so every
node's gateway reloads the tenant's upstreams on its next request."""

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from valetkey.audit.events import AuditEvent
from valetkey.clock import Clock, iso
from valetkey.errors import Conflict, InvalidInput
from valetkey.identity.models import CLASSES
from valetkey.identity.service import IdentityService
from valetkey.ids import new_id
from valetkey.mcp.templates import TemplateError, check_template
from valetkey.policy.decision import ActionDef

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")  # no "_": the first "__" of a listed name splits it
TOOL_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # MCP's tool-name alphabet, capped for action names
MAX_URL = 2048
SEPARATOR = "__"
MCP_SCOPES = tuple(f"mcp:{klass}" for klass in CLASSES)


def mcp_audience(issuer: str) -> str:
    """The resource (RFC 8707) a token for the MCP gateway names."""
    return f"{issuer}/mcp"


def action_name(upstream: str, tool: str) -> str:
    """The intent action of one upstream tool: `mcp:UPSTREAM.TOOL`."""
    return f"mcp:{upstream}.{tool}"


def action_def(upstream: str, tool: str, klass: str) -> ActionDef:
    """The tenant action for a tool: in its class, needing the MCP scope of that class."""
    return ActionDef(action_name(upstream, tool), klass, f"mcp:{klass}")


def check_url(url: str) -> str:
    """An upstream's endpoint: https, or http on loopback only; no credentials or fragment."""
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise InvalidInput("--url must be an https URL (http only on loopback)")
    if not parts.hostname or parts.fragment or parts.username or parts.password:
        raise InvalidInput("--url must be an absolute URL without credentials or fragment")
    if len(url) > MAX_URL or not url.isprintable():
        raise InvalidInput(f"--url is at most {MAX_URL} printable characters")
    return url


@dataclass(frozen=True, slots=True)
class ToolOverride:
    """What an admin fixed for one tool; None leaves the default."""

    klass: str | None = None
    resource: str | None = None  # a template over the call's arguments: crm:deals/{deal_id}
    sanitize: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.klass is not None:
            out["class"] = self.klass
        if self.resource is not None:
            out["resource"] = self.resource
        if self.sanitize is not None:
            out["sanitize"] = self.sanitize
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ToolOverride":
        return cls(data.get("class"), data.get("resource"), data.get("sanitize"))

    @property
    def empty(self) -> bool:
        return not self.to_json()


@dataclass(frozen=True, slots=True)
class Upstream:
    id: str
    tenant_id: str
    name: str
    url: str
    provider: str | None  # the vault provider whose connection supplies the credential
    sanitize: bool
    created_at: float
    updated_at: float
    tools: Mapping[str, ToolOverride] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.name + SEPARATOR

    def override(self, tool: str) -> ToolOverride | None:
        return self.tools.get(tool)

    def view(self, issuer: str) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tenant": self.tenant_id, "url": self.url,
                "provider": self.provider, "sanitize": self.sanitize, "prefix": self.prefix,
                "audience": mcp_audience(issuer),
                "tools": {name: o.to_json() for name, o in sorted(self.tools.items())},
                "created_at": iso(self.created_at)}  # fmt: skip


class UpstreamStore(Protocol):
    async def add(self, upstream: Upstream, events: Sequence[AuditEvent]) -> None: ...
    async def find(self, tenant_id: str, name: str) -> Upstream: ...
    async def actions(self, tenant_id: str, prefix: str) -> list[ActionDef]:
        """The tenant's actions whose names start with `prefix`."""
        ...

    async def list(self, tenant_id: str) -> list[Upstream]: ...
    async def remove(self, upstream: Upstream, events: Sequence[AuditEvent]) -> None: ...
    async def save_tools(
        self, upstream: Upstream, action: ActionDef | None, events: Sequence[AuditEvent]
    ) -> None:
        """Store the upstream's overrides and (when given) upsert the tool's action, with
        the events, in one transaction that bumps the tenant's version."""
        ...


class ProviderLookup(Protocol):
    async def find(self, tenant_id: str, name: str) -> Any:
        """The provider, or NotFound."""
        ...


class McpUpstreams:
    def __init__(self, identity: IdentityService, store: UpstreamStore, providers: ProviderLookup,
                 clock: Clock, issuer: str, cid: str) -> None:  # fmt: skip
        self._identity = identity
        self._store = store
        self._providers = providers
        self._clock = clock
        self._issuer = issuer
        self._cid = cid

    def _event(self, type: str, upstream: Upstream, **data: Any) -> AuditEvent:
        data = {"upstream_id": upstream.id, "name": upstream.name, **data}
        return AuditEvent(type, upstream.tenant_id, self._clock.now(), self._cid, data=data)

    async def add(self, tenant_ref: str, name: str, url: str, provider: str | None = None,
                  sanitize: bool = False) -> Upstream:  # fmt: skip
        tenant = await self._identity.tenant(tenant_ref)
        if not NAME_RE.fullmatch(name):
            raise InvalidInput(
                "an upstream's name is 1-32 lower case letters, digits and dashes, "
                "starting with a letter"
            )
        check_url(url)
        if provider is not None:
            await self._providers.find(tenant.id, provider)  # NotFound: name one that exists
        await self._ensure_audience(tenant.id)
        now = self._clock.now()
        upstream = Upstream(new_id("mcu"), tenant.id, name, url, provider, sanitize, now, now)
        event = self._event("mcp.upstream_added", upstream, url=url, provider=provider,
                            sanitize=sanitize)  # fmt: skip
        await self._store.add(upstream, [event])
        return upstream

    async def _ensure_audience(self, tenant_id: str) -> None:
        """`{issuer}/mcp` with a scope per class, registered once per tenant."""
        audience = mcp_audience(self._issuer)
        if any(r.uri == audience for r in await self._identity.list_resources(tenant_id)):
            return
        with contextlib.suppress(Conflict):  # registered meanwhile by a concurrent add
            await self._identity.create_resource(tenant_id, audience, MCP_SCOPES)

    async def show(self, tenant_ref: str, name: str) -> Upstream:
        return await self._store.find((await self._identity.tenant(tenant_ref)).id, name)

    async def remove(self, tenant_ref: str, name: str) -> Upstream:
        upstream = await self.show(tenant_ref, name)
        await self._store.remove(upstream, [self._event("mcp.upstream_removed", upstream)])
        return upstream

    async def set_tool(
        self,
        tenant_ref: str,
        upstream_name: str,
        tool: str,
        *,
        klass: str | None = None,
        resource: str | None = None,
        sanitize: bool | None = None,
        reset: bool = False,
    ) -> Upstream:
        """Override a tool's class, resource template or sanitising; `reset` clears them
        first. A class override takes effect at once: the tool's action moves to it."""
        upstream = await self.show(tenant_ref, upstream_name)
        if not TOOL_RE.fullmatch(tool):
            raise InvalidInput("a tool name is 1-64 letters, digits and _ . -")
        if klass is not None and klass not in CLASSES:
            raise InvalidInput(f"--class is one of {', '.join(CLASSES)}")
        if resource is not None:
            try:
                check_template(resource)
            except TemplateError as exc:
                raise InvalidInput(f"--resource: {exc}") from exc
        current = ToolOverride() if reset else upstream.override(tool) or ToolOverride()
        updated = ToolOverride(
            klass if klass is not None else current.klass,
            resource if resource is not None else current.resource,
            sanitize if sanitize is not None else current.sanitize,
        )
        tools = {k: v for k, v in upstream.tools.items() if k != tool}
        if not updated.empty:
            tools[tool] = updated
        changed = replace(upstream, tools=tools, updated_at=self._clock.now())
        action = action_def(upstream.name, tool, updated.klass) if updated.klass else None
        event = self._event("mcp.tool_configured", upstream, tool=tool,
                            override=updated.to_json(), reset=reset)  # fmt: skip
        await self._store.save_tools(changed, action, [event])
        return changed

    async def actions(self, tenant_ref: str, upstream_name: str) -> list[ActionDef]:
        """The tenant's actions for this upstream's tools (registered as agents use them)."""
        upstream = await self.show(tenant_ref, upstream_name)
        return await self._store.actions(upstream.tenant_id, action_name(upstream.name, ""))

    @property
    def issuer(self) -> str:
        return self._issuer

    async def list(self, tenant_ref: str) -> list[Upstream]:  # last: it shadows `list` below it
        return await self._store.list((await self._identity.tenant(tenant_ref)).id)
