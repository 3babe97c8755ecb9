"""`valetkey delegations`: what a user handed to which agent (consent, made by an admin)."""

import typer

from valetkey.cli import views
from valetkey.cli.common import (
    JsonOpt,
    OptionalTenantOpt,
    TenantOpt,
    console,
    delegation_service,
    fields,
    print_json,
    run,
    table,
)
from valetkey.clock import parse_duration

app = typer.Typer(help="Delegations from users to agents.", no_args_is_help=True)


@app.command("create")
def create(
    tenant: str = TenantOpt,
    user: str = typer.Option(..., "--user", help="Email of the user who delegates."),
    agent: str = typer.Option(..., "--agent", help="Agent id, or name in the tenant."),
    scope: list[str] = typer.Option(..., "--scope", "-s", help="A delegated scope."),
    resource: list[str] = typer.Option(None, "--resource", help="Limit to this resource."),
    expires: str = typer.Option(None, "--expires", help="e.g. 30d; default: until revoked."),
    mandate_action: list[str] = typer.Option(
        None, "--mandate-action", help="Mandate template: an allowed action (e.g. read)."
    ),
    mandate_location: list[str] = typer.Option(
        None, "--mandate-location", help="Mandate template: a resource pattern (crm:deals/*)."
    ),
    sub_agent: list[str] = typer.Option(
        None, "--sub-agent", help="An agent this one may hand the work on to (a chain)."
    ),
    json: bool = JsonOpt,
) -> None:
    """Record a user's delegation to an agent (never wider than the user's own rights)."""

    async def go() -> None:
        async with delegation_service() as svc:
            record = await svc.create_delegation(
                tenant,
                user,
                agent,
                scope,
                resource or [],
                parse_duration(expires) if expires else None,
                mandate_actions=mandate_action or [],
                mandate_locations=mandate_location or [],
                sub_agents=sub_agent or [],
            )
        data = views.delegation(record, user.strip().lower())
        if json:
            print_json(data)
        else:
            fields("Delegation created", data)

    run(go)


@app.command("list")
def list_(
    tenant: str = TenantOpt,
    user: str = typer.Option(None, "--user", help="Only this user's."),
    agent: str = typer.Option(None, "--agent", help="Only to this agent."),
    json: bool = JsonOpt,
) -> None:
    """List delegations."""

    async def go() -> None:
        async with delegation_service() as svc:
            records = await svc.list_delegations(tenant, user, agent)
        data = [views.delegation(r) for r in records]
        if json:
            print_json(data)
        else:
            table(
                "Delegations",
                ["id", "user", "agent", "scopes", "status", "expires"],
                [
                    (r.id, r.user_id, r.agent_id, " ".join(r.scopes), r.status, d["expires_at"])
                    for r, d in zip(records, data, strict=True)
                ],
            )

    run(go)


@app.command("revoke")
def revoke(
    delegation_id: str = typer.Argument(..., help="dlg_…"),
    tenant: str = OptionalTenantOpt,
    json: bool = JsonOpt,
) -> None:
    """Revoke a delegation."""

    async def go() -> None:
        async with delegation_service() as svc:
            record = await svc.revoke_delegation(delegation_id, tenant)
        if json:
            print_json(views.delegation(record))
        else:
            console.print(f"Delegation {record.id} is {record.status}.")

    run(go)
