"""`valetkey resources`: audiences (RFC 8707) and the scopes they accept."""

import typer

from valetkey.cli import views
from valetkey.cli.common import JsonOpt, TenantOpt, fields, identity, print_json, run, table

app = typer.Typer(help="Manage resources (token audiences) and their scopes.", no_args_is_help=True)


@app.command("create")
def create(
    uri: str = typer.Argument(..., help="The audience URI, e.g. https://crm.example.com."),
    tenant: str = TenantOpt,
    scope: list[str] = typer.Option(..., "--scope", "-s", help="A scope it accepts; repeatable."),
    imply: list[str] = typer.Option(
        None,
        "--imply",
        help="HIGHER>LOWER: holding HIGHER grants LOWER. X:admin>X:write>X:read is implied "
        "automatically.",
    ),
    json: bool = JsonOpt,
) -> None:
    """Register a resource."""

    async def go() -> None:
        async with identity() as (_, svc):
            resource = await svc.create_resource(tenant, uri, scope, imply or [])
        if json:
            print_json(views.resource(resource))
        else:
            fields("Resource created", views.resource(resource))

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List a tenant's resources."""

    async def go() -> None:
        async with identity() as (_, svc):
            resources = await svc.list_resources(tenant)
        if json:
            print_json([views.resource(r) for r in resources])
        else:
            table(
                "Resources",
                ["uri", "scopes", "implies"],
                [
                    (
                        r.uri,
                        " ".join(r.scopes),
                        ", ".join(f"{k}⊃{'/'.join(v)}" for k, v in r.implies.items()),
                    )
                    for r in resources
                ],
            )

    run(go)
