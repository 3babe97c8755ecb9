"""`valetkey providers`: downstream platforms whose tokens live only in the vault."""

import sys

import typer

from valetkey.cli.common import (
    JsonOpt,
    TenantOpt,
    console,
    fail,
    fields,
    print_json,
    run,
    runtime,
    table,
)
from valetkey.ids import new_id
from valetkey.vault.providers import preset_names

app = typer.Typer(help="Downstream platforms (OAuth configuration and API base).",
                  no_args_is_help=True)  # fmt: skip


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Short name, e.g. crm (also the gateway path)."),
    tenant: str = TenantOpt,
    preset: str = typer.Option(None, "--preset", help=f"One of: {', '.join(preset_names())}."),
    authorize_url: str = typer.Option(
        None, "--authorize-url", help="The platform's authorize URL."
    ),
    token_url: str = typer.Option(None, "--token-url", help="The platform's token URL."),
    revoke_url: str = typer.Option(None, "--revoke-url", help="The platform's revocation URL."),
    api_base: str = typer.Option(None, "--api-base", help="Base URL of the platform's API."),
    client_id: str = typer.Option(..., "--client-id", help="ValetKey's client id there."),
    client_secret_stdin: bool = typer.Option(
        False, "--client-secret-stdin", help="Read the client secret from stdin (required)."
    ),
    scope: list[str] = typer.Option(None, "--scope", "-s", help="A scope to request; repeatable."),
    directory: str = typer.Option(None, "--directory", help="Microsoft: the Entra directory id."),
    json: bool = JsonOpt,
) -> None:
    """Add a provider; its client secret is read from stdin and stored encrypted."""
    if not client_secret_stdin:
        fail("give --client-secret-stdin and pipe the secret in (never on the command line)")
    if preset is None and not (authorize_url and token_url and api_base):
        fail("give --preset, or --authorize-url, --token-url and --api-base")
    secret = sys.stdin.readline().strip()
    options = {"authorize_url": authorize_url, "token_url": token_url,
               "revoke_url": revoke_url, "api_base": api_base}  # fmt: skip

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.providers(new_id("cor"))
            provider = await svc.add(
                tenant, name, client_id=client_id, client_secret=secret, preset=preset,
                options=options, placeholders={"directory": directory} if directory else None,
                scopes=scope or [],
            )  # fmt: skip
            data = svc.view(provider)
        if json:
            print_json(data)
        else:
            fields("Provider added", {k: data[k] for k in ("id", "name", "api_base", "audience")})

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List the tenant's providers."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.providers(new_id("cor"))
            data = [svc.view(p) for p in await svc.list(tenant)]
        if json:
            print_json(data)
        else:
            rows = [(d["name"], d["preset"], d["api_base"], d["audience"]) for d in data]
            table("Providers", ["name", "preset", "api base", "audience"], rows)

    run(go)


@app.command("show")
def show(name: str, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Show a provider's configuration (never its client secret)."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.providers(new_id("cor"))
            data = svc.view(await svc.show(tenant, name))
        if json:
            print_json(data)
        else:
            fields(f"Provider {name}", data)

    run(go)


@app.command("remove")
def remove(name: str, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Remove a provider."""

    async def go() -> None:
        async with runtime() as rt:
            removed = await rt.providers(new_id("cor")).remove(tenant, name)
        if json:
            print_json({"id": removed.id, "name": removed.name, "removed": True})
        else:
            console.print(f"Provider {name} removed.")

    run(go)
