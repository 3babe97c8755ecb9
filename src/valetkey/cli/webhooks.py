"""`valetkey webhooks`: signed notifications (Standard Webhooks) and their delivery log."""

import typer

from valetkey.cli.common import JsonOpt, TenantOpt, console, fields, print_json, run, runtime, table
from valetkey.clock import iso
from valetkey.ids import new_id

app = typer.Typer(help="Webhooks that hear of approval requests.", no_args_is_help=True)


@app.command("add")
def add(
    url: str = typer.Argument(
        ..., help="Where to POST (https; private addresses need VALETKEY_FETCH_ALLOW_HOSTS)."
    ),
    tenant: str = TenantOpt,
    json: bool = JsonOpt,
) -> None:
    """Add a webhook; its signing secret is shown once."""

    async def go() -> None:
        async with runtime() as rt:
            hook = await rt.notifications(new_id("cor")).add_webhook(tenant, url)
        data = {"id": hook.id, "url": hook.url, "secret": hook.secret}
        if json:
            print_json(data)
        else:
            fields("Webhook added", {"id": hook.id, "url": hook.url})
            console.print(f"\n[bold]secret[/bold] {hook.secret}\n[yellow]Shown once.[/yellow]")

    run(go)  # fmt: skip


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List the tenant's webhooks (never their secrets)."""

    async def go() -> None:
        async with runtime() as rt:
            hooks = await rt.notifications(new_id("cor")).list_webhooks(tenant)
        data = [{"id": h.id, "url": h.url, "status": h.status, "created_at": iso(h.created_at)}
                for h in hooks]  # fmt: skip
        if json:
            print_json(data)
        else:
            table(
                "Webhooks",
                ["id", "url", "status"],
                [(d["id"], d["url"], d["status"]) for d in data],
            )

    run(go)


@app.command("deliveries")
def deliveries(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """The delivery log: every notification, its attempts and its last outcome."""

    async def go() -> None:
        async with runtime() as rt:
            found = await rt.notifications(new_id("cor")).deliveries(tenant)
        data = [{"id": d.id, "channel": d.channel, "target": d.target, "event": d.event_type,
                 "status": d.status, "attempts": d.attempts, "last_status": d.last_status,
                 "last_error": d.last_error, "created_at": iso(d.created_at),
                 "delivered_at": iso(d.delivered_at) if d.delivered_at else None}
                for d in found]  # fmt: skip
        if json:
            print_json(data)
        else:
            table("Deliveries", ["id", "channel", "target", "status", "attempts", "last error"],
                  [(d["id"], d["channel"], d["target"], d["status"], d["attempts"],
                    d["last_error"]) for d in data])  # fmt: skip

    run(go)
