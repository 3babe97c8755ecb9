"""`valetkey connections`: the vault's entries. Never prints a token."""

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

app = typer.Typer(help="Platform tokens held by the vault (never shown).", no_args_is_help=True)


@app.command("import")
def import_(
    tenant: str = TenantOpt,
    provider: str = typer.Option(..., "--provider", help="The provider's name."),
    user: str = typer.Option(None, "--user", help="The user the tokens belong to (email)."),
    agent: str = typer.Option(None, "--agent", help="Or the agent whose own account it is."),
    refresh_token_stdin: bool = typer.Option(
        False, "--refresh-token-stdin", help="Read the refresh token from stdin (required)."
    ),
    json: bool = JsonOpt,
) -> None:
    """Import a refresh token someone already holds, so agents stop borrowing it."""
    if not refresh_token_stdin:
        fail("give --refresh-token-stdin and pipe the token in (never on the command line)")
    token = sys.stdin.readline().strip()

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.connections(new_id("cor"))
            made = await svc.import_refresh_token(tenant, provider, user=user, agent=agent,
                                                  refresh_token=token)  # fmt: skip
            data = made.view(await svc.owner_label(made))
        if json:
            print_json(data)
        else:
            fields("Connection imported", data)

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List connections (never their tokens)."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.connections(new_id("cor"))
            data = [c.view(await svc.owner_label(c)) for c in await svc.list(tenant)]
        if json:
            print_json(data)
        else:
            rows = [(d["id"], d["provider"], d["owner"], d["status"]) for d in data]
            table("Connections", ["id", "provider", "owner", "status"], rows)

    run(go)


@app.command("show")
def show(connection_id: str, json: bool = JsonOpt) -> None:
    """Show one connection (never its tokens)."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.connections(new_id("cor"))
            found = await svc.get(connection_id)
            data = found.view(await svc.owner_label(found))
        if json:
            print_json(data)
        else:
            fields(f"Connection {connection_id}", data)

    run(go)


@app.command("revoke")
def revoke(connection_id: str, json: bool = JsonOpt) -> None:
    """Revoke at the platform (RFC 7009) and destroy the stored tokens."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.connections(new_id("cor"))
            done, status = await svc.revoke(connection_id)
            data = {**done.view(await svc.owner_label(done)), "status": "revoked",
                    "platform_status": status}  # fmt: skip
        if json:
            print_json(data)
        else:
            console.print(f"Connection {connection_id} revoked (platform answered {status}).")

    run(go)
