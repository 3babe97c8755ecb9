"""`valetkey approvals`: what agents wait for, and a human's answer."""

import typer

from valetkey.cli.common import (
    JsonOpt,
    TenantOpt,
    console,
    fields,
    print_json,
    run,
    runtime,
    table,
)
from valetkey.ids import new_id
from valetkey.policy.approvals import Approval

app = typer.Typer(help="Human approvals of agents' risky actions.", no_args_is_help=True)
IdArg = typer.Argument(..., help="The approval's id (apr_…).")


def _view(approval: Approval, issuer: str) -> dict[str, object]:
    return approval.to_json(issuer)


@app.command("list")
def list_(
    tenant: str = TenantOpt,
    status: str = typer.Option(
        None, "--status", help="pending, approved, denied, used or expired."
    ),
    json: bool = JsonOpt,
) -> None:
    """List approvals, newest first."""

    async def go() -> None:
        async with runtime() as rt:
            found = await rt.identity("").tenant(tenant)
            items = await rt.approval_store.list_approvals(found.id, status)
            data = [_view(a, rt.settings.issuer) for a in items]
        if json:
            print_json(data)
        else:
            table("Approvals", ["id", "status", "agent", "intent", "expires"],
                  [(d["id"], d["status"], d["agent"],
                    f"{d['intent']['action']} {d['intent']['resource']}",  # type: ignore[index]
                    d["expires_at"]) for d in data])  # fmt: skip

    run(go)


@app.command("show")
def show(approval_id: str = IdArg, json: bool = JsonOpt) -> None:
    """Show one approval: what the agent wants to do, for whom, and why."""

    async def go() -> None:
        async with runtime() as rt:
            data = _view(await rt.approvals().get(approval_id), rt.settings.issuer)
        if json:
            print_json(data)
        else:
            fields(f"Approval {approval_id}", data)

    run(go)


def _decide(approval_id: str, by: str, reason: str | None, approve: bool, json: bool) -> None:
    async def go() -> None:
        async with runtime() as rt:
            current = await rt.approvals().get(approval_id)
            approver = await rt.identity("").user(current.tenant_id, by)
            tenant = await rt.identity("").tenant(current.tenant_id)
            decided = await rt.approvals().decide(
                approval_id, approver, approve, reason, tenant.settings.self_approval_classes,
                new_id("cor"),
            )  # fmt: skip
            data = _view(decided, rt.settings.issuer)
        if json:
            print_json(data)
        else:
            console.print(f"Approval {approval_id} is now {data['status']}.")

    run(go)


@app.command("approve")
def approve(
    approval_id: str = IdArg,
    by: str = typer.Option(..., "--by", help="Email of the approver (approver or admin)."),
    reason: str = typer.Option(None, "--reason", help="Why, for the audit log."),
    json: bool = JsonOpt,
) -> None:
    """Approve: the agent may then do exactly this, once."""
    _decide(approval_id, by, reason, True, json)


@app.command("deny")
def deny(
    approval_id: str = IdArg,
    by: str = typer.Option(..., "--by", help="Email of the approver (approver or admin)."),
    reason: str = typer.Option(None, "--reason", help="Why, for the audit log."),
    json: bool = JsonOpt,
) -> None:
    """Deny the request."""
    _decide(approval_id, by, reason, False, json)
