"""`valetkey clients`: OAuth clients that are not agents (resource servers, gateways)."""

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

app = typer.Typer(help="Manage service clients and their rights.", no_args_is_help=True)


@app.command("create")
def create(
    name: str,
    tenant: str = TenantOpt,
    right: list[str] = typer.Option(
        None, "--right", help="introspect (call /oauth/introspect) or pdp; repeatable."
    ),
    redirect_uri: list[str] = typer.Option(
        None,
        "--redirect-uri",
        help="Where /oauth/authorize sends a signed-in user back (exact; loopback on any "
        "port); repeatable. Such a client gets the user's own tokens.",
    ),
    json: bool = JsonOpt,
) -> None:
    """Create a service client."""

    async def go() -> None:
        async with identity() as (_, svc):
            client, secret = await svc.create_service_client(
                tenant, name, right or [], redirect_uri or []
            )
        data = views.service_client(client, secret)
        if json:
            print_json(data)
        else:
            fields("Client created", {k: v for k, v in data.items() if k != "client_secret"})
            console.print(f"\n[bold]client_secret[/bold] {secret}\n[yellow]Shown once.[/yellow]")

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List service clients."""

    async def go() -> None:
        async with identity() as (_, svc):
            clients = await svc.list_service_clients(tenant)
        if json:
            print_json([views.service_client(c) for c in clients])
        else:
            table(
                "Clients",
                ["id", "name", "rights"],
                [(c.id, c.name, ", ".join(c.rights)) for c in clients],
            )

    run(go)
