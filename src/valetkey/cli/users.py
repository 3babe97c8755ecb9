"""`valetkey users`: the people agents act for, sponsor, and answer to."""

import sys

import typer

from valetkey.cli import views
from valetkey.cli.common import (
    JsonOpt,
    TenantOpt,
    console,
    fields,
    identity,
    print_json,
    run,
    table,
)
from valetkey.ids import new_id

app = typer.Typer(help="Manage a tenant's users.", no_args_is_help=True)


@app.command("create")
def create(
    email: str,
    tenant: str = TenantOpt,
    role: list[str] = typer.Option(
        None, "--role", "-r", help="member (default), approver or admin; repeatable."
    ),
    json: bool = JsonOpt,
) -> None:
    """Create a user."""

    async def go() -> None:
        async with identity() as (_, svc):
            user = await svc.create_user(tenant, email, role or [])
        if json:
            print_json(views.user(user))
        else:
            fields("User created", views.user(user))

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List a tenant's users."""

    async def go() -> None:
        async with identity() as (_, svc):
            users = await svc.list_users(tenant)
        if json:
            print_json([views.user(u) for u in users])
        else:
            table(
                "Users",
                ["id", "email", "roles", "status"],
                [(u.id, u.email, ", ".join(u.roles), u.status) for u in users],
            )

    run(go)


@app.command("set-password")
def set_password(email: str, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Set a user's login password, read from standard input (never from an argument)."""
    password = sys.stdin.readline().rstrip("\r\n")

    async def go() -> None:
        async with identity() as (_, svc):
            user = await svc.set_password(tenant, email, password)
        if json:
            print_json({**views.user(user), "password_set": True})
        else:
            console.print(f"Password set for {user.email}.")

    run(go)


@app.command("deactivate")
def deactivate(email: str, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Deactivate a user. Agents they sponsor keep working and are flagged needs_sponsor;
    the user's connections in the vault are revoked."""

    async def go() -> None:
        async with identity() as (rt, svc):
            user, flagged = await svc.deactivate_user(tenant, email)
            vault = rt.connections(new_id("cor"))
            revoked = [c.id for c in await vault.list(user.tenant_id)
                       if c.owner_kind == "user" and c.owner_id == user.id
                       and c.status != "revoked"]  # fmt: skip
            for connection_id in revoked:
                await vault.revoke(connection_id, reason="user deactivated")
        if json:
            print_json({**views.user(user), "flagged_agents": [a.id for a in flagged],
                        "revoked_connections": revoked})  # fmt: skip
            return
        for connection_id in revoked:
            console.print(f"revoked connection {connection_id}")
        console.print(f"Deactivated {user.email}.")
        for agent in flagged:
            console.print(
                f"[yellow]needs_sponsor[/yellow] {agent.name} ({agent.id}) keeps working; "
                f"assign a sponsor: valetkey agents set-sponsor {agent.id} EMAIL"
            )

    run(go)
