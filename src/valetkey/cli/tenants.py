"""`valetkey tenants`: trust boundaries. Nothing crosses from one tenant to another."""

import typer

from valetkey.cli import views
from valetkey.cli.common import JsonOpt, fields, identity, print_json, run, table
from valetkey.clock import parse_duration

app = typer.Typer(help="Create and configure tenants.", no_args_is_help=True)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Lowercase name, e.g. acme."), json: bool = JsonOpt
) -> None:
    """Create a tenant."""

    async def go() -> None:
        async with identity() as (_, svc):
            tenant = await svc.create_tenant(name)
        if json:
            print_json(views.tenant(tenant))
        else:
            fields("Tenant created", views.tenant(tenant))

    run(go)


@app.command("list")
def list_(json: bool = JsonOpt) -> None:
    """List tenants."""

    async def go() -> None:
        async with identity() as (_, svc):
            tenants = await svc.list_tenants()
        if json:
            print_json([views.tenant(t, full=True) for t in tenants])
        else:
            table(
                "Tenants",
                ["id", "name", "max token lifetime"],
                [(t.id, t.name, f"{t.settings.max_token_lifetime // 60} min") for t in tenants],
            )

    run(go)


@app.command("set")
def set_(
    tenant: str = typer.Argument(..., help="Tenant name or id."),
    max_token_lifetime: str = typer.Option(
        None, "--max-token-lifetime", help="Upper bound for access tokens, e.g. 30m (≤ 60m)."
    ),
    token_lifetime: str = typer.Option(
        None, "--token-lifetime", help="Lifetime of new access tokens, e.g. 10m."
    ),
    require_dpop: bool = typer.Option(
        None, "--require-dpop/--no-require-dpop", help="Require DPoP-bound tokens for agents."
    ),
    admin_only_scope: list[str] = typer.Option(
        None, "--admin-only-scope", help="A scope only admins may delegate; repeatable."
    ),
    block_scope: list[str] = typer.Option(
        None, "--block-scope", help="Refuse this scope everywhere, at once; repeatable."
    ),
    unblock_scope: list[str] = typer.Option(
        None, "--unblock-scope", help="Lift a block; repeatable."
    ),
    self_approval: list[str] = typer.Option(
        None,
        "--self-approval",
        help="A class of request users may approve for themselves (replaces the list; "
        "default write; 'none' for none); repeatable.",
    ),
    default_tenant: bool = typer.Option(
        None, "--default-tenant", help="Self-registered clients (RFC 7591, MCP) join this tenant."
    ),
    auto_approve_clients: bool = typer.Option(
        None,
        "--auto-approve-clients/--no-auto-approve-clients",
        help="Activate self-registered clients at once (within --registration-scope).",
    ),
    registration_scope: list[str] = typer.Option(
        None,
        "--registration-scope",
        help="The scope ceiling of auto-approved registrations (replaces the list); repeatable.",
    ),
    json: bool = JsonOpt,
) -> None:
    """Change a tenant's admin controls."""

    async def go() -> None:
        async with identity() as (_, svc):
            updated = await svc.set_tenant(
                tenant,
                token_lifetime=parse_duration(token_lifetime) if token_lifetime else None,
                max_token_lifetime=parse_duration(max_token_lifetime)
                if max_token_lifetime
                else None,
                require_dpop=require_dpop,
                admin_only_scopes=admin_only_scope or (),
                block_scopes=block_scope or (),
                unblock_scopes=unblock_scope or (),
                self_approval_classes=self_approval or None,
                default_tenant=default_tenant,
                auto_approve_clients=auto_approve_clients,
                registration_scopes=registration_scope,
            )
        if json:
            print_json(views.tenant(updated, full=True))
        else:
            fields(f"Tenant {updated.name}", views.tenant(updated, full=True)["settings"])

    run(go)
