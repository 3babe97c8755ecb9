"""`valetkey roles`: which scopes each tenant role holds (a user's own rights)."""

import typer

from valetkey.cli.common import (
    JsonOpt,
    TenantOpt,
    console,
    delegation_service,
    print_json,
    run,
    table,
)

app = typer.Typer(help="Role → scope mapping.", no_args_is_help=True)


@app.command("set")
def set_(
    role: str = typer.Argument(..., help="member, approver or admin."),
    tenant: str = TenantOpt,
    scope: list[str] = typer.Option(..., "--scope", "-s", help="A scope the role holds."),
    json: bool = JsonOpt,
) -> None:
    """Replace the scopes a role holds."""

    async def go() -> None:
        async with delegation_service() as svc:
            scopes = await svc.set_role(tenant, role, scope)
        if json:
            print_json({"role": role, "scopes": scopes})
        else:
            console.print(f"{role} now holds {' '.join(scopes)}")

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Show what each role holds (defaults: admin every scope, others the read scopes)."""

    async def go() -> None:
        async with delegation_service() as svc:
            roles = await svc.roles(tenant)
        if json:
            print_json({role: list(scopes) for role, scopes in roles.items()})
        else:
            table("Roles", ["role", "scopes"], [(r, " ".join(s)) for r, s in roles.items()])

    run(go)
