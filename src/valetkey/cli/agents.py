"""`valetkey agents`: first-class agent identities, their credentials and lifecycle."""

from pathlib import Path
from typing import Any

import typer

from valetkey.cli import views
from valetkey.cli.common import (
    JsonOpt,
    OptionalTenantOpt,
    TenantOpt,
    console,
    fields,
    identity,
    print_json,
    run,
    table,
)
from valetkey.clock import iso, parse_duration
from valetkey.identity.models import Client
from valetkey.identity.public_keys import parse_public_keys
from valetkey.identity.service import IdentityService

app = typer.Typer(help="Manage agent identities.", no_args_is_help=True)
AgentArg = typer.Argument(..., help="Agent id (agt_…), or its name with --tenant.")


async def _view(svc: IdentityService, agent: Client, secret: str | None = None) -> dict[str, Any]:
    sponsor = await svc.sponsor_of(agent)
    return views.agent(agent, sponsor.email if sponsor else None, secret)


def _show(title: str, data: dict[str, Any]) -> None:
    shown = {k: v for k, v in data.items() if k not in ("credentials", "client_secret")}
    fields(title, shown)
    if data.get("client_secret"):
        console.print(
            f"\n[bold]client_secret[/bold] {data['client_secret']}\n"
            "[yellow]Shown once: store it in the agent's secret store now.[/yellow]"
        )


@app.command("create")
def create(
    name: str = typer.Argument(..., help="The agent's role, e.g. invoice-bot."),
    tenant: str = TenantOpt,
    sponsor: str = typer.Option(..., "--sponsor", help="Email of the accountable human."),
    scope: list[str] = typer.Option(None, "--scope", "-s", help="An allowed scope; repeatable."),
    public_key: Path = typer.Option(
        None,
        "--public-key",
        exists=True,
        dir_okay=False,
        help="PEM public key, JWK or JWKS for private_key_jwt (then no secret is issued).",
    ),
    description: str = typer.Option("", "--description", help="What the agent does."),
    address: str = typer.Option(None, "--address", help="Default NAME@TENANT.agents."),
    redirect_uri: list[str] = typer.Option(
        None,
        "--redirect-uri",
        help="Where /oauth/authorize may send the user back (exact; loopback on any port); "
        "repeatable.",
    ),
    json: bool = JsonOpt,
) -> None:
    """Create an agent with its own credentials."""

    raw_key = public_key.read_bytes() if public_key else None

    async def go() -> None:
        jwks = (
            parse_public_keys(raw_key.decode("utf-8", "replace")) if raw_key is not None else None
        )
        async with identity() as (_, svc):
            agent, secret = await svc.create_agent(
                tenant,
                name,
                sponsor,
                scope or [],
                jwks=jwks,
                description=description,
                address=address,
                redirect_uris=redirect_uri or [],
            )
            data = await _view(svc, agent, secret)
        if json:
            print_json(data)
        else:
            _show("Agent created", data)

    run(go)


@app.command("list")
def list_(tenant: str = OptionalTenantOpt, json: bool = JsonOpt) -> None:
    """List agents with status and sponsor."""

    async def go() -> None:
        async with identity() as (_, svc):
            agents = await svc.list_agents(tenant)
            data = [await _view(svc, a) for a in agents]
        if json:
            print_json(data)
        else:
            table(
                "Agents",
                ["id", "name", "status", "sponsor", "scopes"],
                [
                    (
                        d["id"],
                        d["name"],
                        str(d["status"]) + (" · needs_sponsor" if d["needs_sponsor"] else ""),
                        d["sponsor"],
                        " ".join(d["scopes"]),
                    )
                    for d in data
                ],
            )

    run(go)


@app.command("show")
def show(agent: str = AgentArg, tenant: str = OptionalTenantOpt, json: bool = JsonOpt) -> None:
    """Show one agent and its credentials' metadata (never a secret)."""

    async def go() -> None:
        async with identity() as (_, svc):
            data = await _view(svc, await svc.agent(agent, tenant))
        if json:
            print_json(data)
            return
        _show(f"Agent {data['name']}", data)
        creds = data["credentials"]
        rows = [
            ("secret", s["id"], s["created_at"], s["expires_at"] or "") for s in creds["secrets"]
        ]
        rows += [("public key", kid, "", "") for kid in creds["keys"]]
        table("Credentials", ["kind", "id", "created", "expires"], rows)

    run(go)


def _lifecycle(verb: str, doc: str) -> None:
    def command(
        agent: str = AgentArg, tenant: str = OptionalTenantOpt, json: bool = JsonOpt
    ) -> None:
        async def go() -> None:
            async with identity() as (_, svc):
                method = getattr(svc, f"{verb}_agent")
                updated = await method(agent, tenant)
                data = await _view(svc, updated)
            if json:
                print_json(data)
            else:
                console.print(f"Agent {updated.name} ({updated.id}) is now {updated.status}.")

        run(go)

    command.__doc__ = doc
    app.command(verb)(command)


_lifecycle("suspend", "Suspend an agent: new tokens refused, its tokens inactive, at once.")
_lifecycle("resume", "Resume a suspended agent.")
_lifecycle("decommission", "Decommission an agent for good; its credentials are destroyed.")


@app.command("rotate-secret")
def rotate_secret(
    agent: str = AgentArg,
    tenant: str = OptionalTenantOpt,
    grace: str = typer.Option(
        None, "--grace", help="How long the previous secret keeps working (default 24h)."
    ),
    json: bool = JsonOpt,
) -> None:
    """Issue a new client secret; the old one works until the grace period ends."""

    async def go() -> None:
        async with identity() as (_, svc):
            updated, secret = await svc.rotate_secret(
                agent, tenant, parse_duration(grace) if grace is not None else None
            )
        previous = [s for s in updated.secrets[:-1] if s.expires_at]
        data = {
            "id": updated.id,
            "client_id": updated.id,
            "client_secret": secret,
            "previous_expires_at": iso(max(s.expires_at for s in previous if s.expires_at))
            if previous
            else None,
        }
        if json:
            print_json(data)
        else:
            console.print(f"[bold]client_secret[/bold] {secret}")
            console.print("[yellow]Shown once: store it in the agent's secret store now.[/yellow]")
            if data["previous_expires_at"]:
                console.print(f"The previous secret works until {data['previous_expires_at']}.")

    run(go)


@app.command("approve")
def approve(
    agent: str = AgentArg,
    sponsor: str = typer.Option(..., "--sponsor", help="The accountable human's email."),
    scope: list[str] = typer.Option(
        None, "--scope", "-s", help="Grant only these scopes (default: what it asked for)."
    ),
    tenant: str = OptionalTenantOpt,
    json: bool = JsonOpt,
) -> None:
    """Approve a pending (self-registered) agent: it goes live with a sponsor."""

    async def go() -> None:
        async with identity() as (_, svc):
            updated = await svc.approve_agent(agent, tenant, sponsor, scope or None)
            data = await _view(svc, updated)
        if json:
            print_json(data)
        else:
            console.print(f"Agent {updated.name} ({updated.id}) is now active.")

    run(go)


@app.command("set-sponsor")
def set_sponsor(
    agent: str = AgentArg,
    email: str = typer.Argument(..., help="The new sponsor's email."),
    tenant: str = OptionalTenantOpt,
    json: bool = JsonOpt,
) -> None:
    """Assign a new accountable human (clears needs_sponsor)."""

    async def go() -> None:
        async with identity() as (_, svc):
            updated = await svc.set_sponsor(agent, email, tenant)
            data = await _view(svc, updated)
        if json:
            print_json(data)
        else:
            console.print(f"Agent {updated.name} is now sponsored by {data['sponsor']}.")

    run(go)
