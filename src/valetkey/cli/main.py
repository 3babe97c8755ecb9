"""The `valetkey` command. Each resource group is its own module; they share `common`."""

import os

import typer

from valetkey import __version__
from valetkey.cli import (
    actions,
    agents,
    approvals,
    audit,
    clients,
    connections,
    delegations,
    demo,
    issuers,
    keys,
    limits,
    mcp,
    policies,
    providers,
    resources,
    roles,
    tenants,
    users,
    webhooks,
)
from valetkey.cli.common import console, print_json, run, runtime, settings
from valetkey.cli.sanitize import sanitize_command
from valetkey.storage.migrate import head_revision

app = typer.Typer(
    name="valetkey",
    help="ValetKey: every AI agent gets its own keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)

app.add_typer(tenants.app, name="tenants")
app.add_typer(users.app, name="users")
app.add_typer(resources.app, name="resources")
app.add_typer(agents.app, name="agents")
app.add_typer(clients.app, name="clients")
app.add_typer(issuers.app, name="issuers")
app.add_typer(roles.app, name="roles")
app.add_typer(delegations.app, name="delegations")
app.add_typer(actions.app, name="actions")
app.add_typer(policies.app, name="policies")
app.add_typer(approvals.app, name="approvals")
app.add_typer(limits.app, name="limits")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(providers.app, name="providers")
app.add_typer(connections.app, name="connections")
app.add_typer(mcp.app, name="mcp")
app.command("sanitize")(sanitize_command)
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(db_app, name="db")
app.command("demo")(demo.demo)


@app.command("version")
def version() -> None:
    """Print the version."""
    console.print(__version__)


@db_app.command("upgrade")
def db_upgrade(json: bool = typer.Option(False, "--json")) -> None:
    """Apply migrations (serve does this on start)."""

    async def go() -> str:
        async with runtime() as rt:  # opening the runtime migrates
            await rt.keys.ensure()
        return head_revision()

    revision = run(go)
    if json:
        print_json({"revision": revision})
    else:
        console.print(f"Schema at revision {revision}.")


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8400, "--port", help="Port to bind."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Run the server (migrations are applied first)."""
    import uvicorn

    os.environ["VALETKEY_WORKERS"] = str(workers)  # the workers read their settings anew
    cfg = settings()

    async def prepare() -> None:
        async with runtime() as rt:
            await rt.keys.ensure()

    run(prepare)
    console.print(
        f"ValetKey {__version__} on http://{host}:{port} (issuer {cfg.issuer}, "
        f"{'SQLite' if not cfg.database_url else cfg.database_url.split(':')[0]}, "
        f"{workers} worker{'s' if workers > 1 else ''})",
        highlight=False,
    )
    uvicorn.run(
        "valetkey.web.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=cfg.log_level,
        access_log=access_log,
        server_header=False,
        proxy_headers=False,
    )


def main() -> None:
    app()
