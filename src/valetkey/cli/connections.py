"""`valetkey connections`: the vault's entries. Never prints a token."""

import sys

import httpx
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
from valetkey.vault.platform import PlatformError, token_timeout
from valetkey.vault.refresh import ConnectionUnusable

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


@app.command("refresh")
def refresh(
    connection_id: str = typer.Argument(None, help="The connection to refresh now."),
    due: bool = typer.Option(
        False, "--due", help="Refresh every connection due an idle refresh (as the server does)."
    ),
    json: bool = JsonOpt,
) -> None:
    """Refresh a connection's platform token now (single-flight with the gateway), or with
    --due the connections of platforms that revoke idle grants."""
    if (connection_id is None) == (not due):
        fail("give a connection id or --due")

    async def go() -> None:
        cid = new_id("cor")
        async with runtime() as rt, httpx.AsyncClient(
            follow_redirects=False, timeout=token_timeout(rt.settings.gateway_timeout)
        ) as http:  # fmt: skip
            vault = rt.token_vault(http)
            if due:
                data: dict[str, object] = {
                    "refreshed": await vault.refresh_idle(rt.connection_store, cid)
                }
            else:
                svc = rt.connections(cid)
                await svc.get(connection_id)
                try:
                    await vault.refresh_now(connection_id, cid)
                except ConnectionUnusable as exc:
                    fail(str(exc))
                except PlatformError as exc:
                    fail(f"the platform did not refresh it: {exc}")
                found = await svc.get(connection_id)
                data = found.view(await svc.owner_label(found))
        if json:
            print_json(data)
        elif due:
            console.print(f"{data['refreshed']} connection(s) refreshed.")
        else:
            fields(f"Connection {connection_id} refreshed", data)

    run(go)
