"""`valetkey audit`: search, verify and export the hash-chained log."""

import sys
from pathlib import Path

import orjson
import typer
from rich.progress import Progress

from valetkey.audit import service
from valetkey.audit.chain import Verification
from valetkey.audit.events import SYSTEM_TENANT, AuditQuery
from valetkey.cli import views
from valetkey.cli.common import (
    JsonOpt,
    OptionalTenantOpt,
    console,
    err_console,
    fail,
    print_json,
    run,
    runtime,
    table,
)
from valetkey.clock import iso
from valetkey.runtime import Runtime

app = typer.Typer(help="The audit log.", no_args_is_help=True)


async def _tenant_ids(rt: Runtime, tenant: str | None) -> list[str]:
    if tenant is None:
        return await rt.audit_store.chained_tenants()
    if tenant == SYSTEM_TENANT:
        return [SYSTEM_TENANT]
    return [(await rt.identity_store.find_tenant(tenant)).id]


@app.command("search")
def search(
    tenant: str = OptionalTenantOpt,
    agent: str = typer.Option(None, "--agent", help="Agent id."),
    user: str = typer.Option(None, "--user", help="User id."),
    correlation_id: str = typer.Option(None, "--correlation-id", help="One task's id."),
    type_: str = typer.Option(None, "--type", help="Event type, e.g. token.issued."),
    limit: int = typer.Option(100, "--limit", min=1, max=10000),
    json: bool = JsonOpt,
) -> None:
    """Find events, newest first."""

    async def go() -> None:
        async with runtime() as rt:
            tenant_id = (await _tenant_ids(rt, tenant))[0] if tenant else None
            events = await rt.audit_store.search(
                AuditQuery(tenant_id, agent, user, correlation_id, type_, limit)
            )
        if json:
            print_json([views.event(e) for e in events])
            return
        table(
            "Audit events",
            ["time", "type", "outcome", "agent", "user", "correlation", "reason"],
            [
                (
                    iso(e.ts_us / 1e6).replace("T", " ").rstrip("Z"),
                    e.type,
                    e.outcome,
                    e.agent_id,
                    e.user_id,
                    e.correlation_id,
                    e.reason,
                )
                for e in events
            ],
        )

    run(go)


@app.command("verify")
def verify(tenant: str = OptionalTenantOpt, json: bool = JsonOpt) -> None:
    """Check every hash link; exit 1 and name the first broken one if the log was altered."""

    async def go() -> None:
        async with runtime() as rt:
            tenant_ids = await _tenant_ids(rt, tenant)
            if json or not sys.stderr.isatty():
                result = await service.verify(rt.audit_store, tenant_ids)
            else:
                with Progress(console=err_console, transient=True) as progress:
                    task = progress.add_task("verifying", total=len(tenant_ids))
                    result = Verification(True, 0)
                    for tenant_id in tenant_ids:
                        part = await service.verify(rt.audit_store, [tenant_id])
                        result = Verification(part.ok, result.events + part.events, part.broken)
                        progress.advance(task)
                        if not part.ok:
                            break
        data: dict[str, object] = {"ok": result.ok, "events": result.events}
        if result.broken:
            data["broken"] = result.broken
        if json:
            print_json(data)
        elif result.ok:
            console.print(f"[green]ok[/green]: {result.events} events, every link intact.")
        else:
            broken = result.broken or {}
            console.print(
                f"[red]BROKEN[/red] at tenant {broken.get('tenant')} seq {broken.get('seq')}: "
                f"{broken.get('reason')}"
            )
        if not result.ok:
            raise SystemExit(1)

    run(go)


@app.command("export")
def export(
    format_: str = typer.Option("jsonl", "--format", help="jsonl (one event per line)."),
    tenant: str = OptionalTenantOpt,
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default stdout)."),
) -> None:
    """Export events in chain order, with their hashes, for a SIEM or an auditor."""
    if format_ != "jsonl":
        fail("only --format jsonl is supported")

    async def go() -> None:
        async with runtime() as rt:
            tenant_ids = await _tenant_ids(rt, tenant)
            handle = output.open("wb") if output else sys.stdout.buffer
            try:
                for tenant_id in tenant_ids:
                    async for event in rt.audit_store.iterate(tenant_id):
                        handle.write(orjson.dumps(views.event(event)) + b"\n")
            finally:
                if output:
                    handle.close()
                else:
                    handle.flush()

    run(go)
