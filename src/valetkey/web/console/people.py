"""What a person holds: the delegations they gave agents (revoke), their platform
connections (connect, disconnect) and, for admins, every connection of the tenant with its
owner and status — never a token."""

from fastapi import APIRouter, Request
from starlette.responses import Response

from valetkey.errors import NotFound
from valetkey.web.console.base import cid, form, redirect, render, runtime_of, viewer

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/delegations")
async def delegations(request: Request) -> Response:
    who = await viewer(request)
    runtime = runtime_of(request)
    mine = await runtime.delegation_store.list_delegations(who.tenant.id, who.user.id, None)
    agents = {a.id: a for a in await runtime.identity_store.list_clients(who.tenant.id, "agent")}
    now = runtime.clock.now()
    live = [d for d in mine if d.live(now)]
    ended = [d for d in mine if not d.live(now)]
    return render(request, who, "delegations.html", title="My delegations", live=live,
                  ended=ended, agents=agents)  # fmt: skip


@router.post("/delegations/{delegation_id}/revoke")
async def revoke(request: Request, delegation_id: str) -> Response:
    who = await viewer(request)
    await form(request)
    runtime = runtime_of(request)
    found = await runtime.delegation_store.get_delegation(delegation_id[:64])
    if found.tenant_id != who.tenant.id or found.user_id != who.user.id:
        raise NotFound(f"no delegation {delegation_id!r} of yours")
    await runtime.delegations(cid(request)).revoke_delegation(found.id, who.tenant.id)
    return redirect("/console/delegations", "revoked")


@router.get("/connections")
async def connections(request: Request) -> Response:
    who = await viewer(request)
    runtime = runtime_of(request)
    everything = await runtime.connection_store.list_all(who.tenant.id)
    mine = [c for c in everything if c.owner_kind == "user" and c.owner_id == who.user.id]
    providers = await runtime.provider_store.list(who.tenant.id)
    owners: dict[str, str] = {}
    if who.is_admin:
        owners = {u.id: u.email for u in await runtime.identity_store.list_users(who.tenant.id)}
        agents = await runtime.identity_store.list_clients(who.tenant.id, "agent")
        owners.update({a.id: f"agent {a.name}" for a in agents})
    held = {c.provider for c in mine if c.status != "revoked"}
    return render(
        request, who, "connections.html", title="Connections", mine=mine, providers=providers,
        held=held, everything=everything if who.is_admin else [], owners=owners,
    )  # fmt: skip


@router.post("/connections/{connection_id}/disconnect")
async def disconnect(request: Request, connection_id: str) -> Response:
    who = await viewer(request)
    await form(request)
    runtime = runtime_of(request)
    service = runtime.connections(cid(request))
    found = await service.get(connection_id[:64], who.tenant.id)
    if not who.is_admin and not (found.owner_kind == "user" and found.owner_id == who.user.id):
        raise NotFound(f"no connection {connection_id!r} of yours")
    await service.revoke(found.id, who.tenant.id, reason="disconnected in the console")
    return redirect("/console/connections", "disconnected")
