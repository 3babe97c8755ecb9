"""`valetkey actions`: the tenant's actions, each in one class, with the scope it needs."""

import typer

from valetkey.cli.common import JsonOpt, TenantOpt, fields, policy_service, print_json, run, table
from valetkey.identity.models import CLASSES
from valetkey.policy.decision import ActionDef

app = typer.Typer(help="Actions that intents name, and their classes.", no_args_is_help=True)


def _view(action: ActionDef) -> dict[str, str | None]:
    return {"name": action.name, "class": action.klass, "scope": action.scope}


@app.command("add")
def add(
    name: str = typer.Argument(..., help="e.g. crm:deals.delete"),
    tenant: str = TenantOpt,
    klass: str = typer.Option(..., "--class", help=f"One of {', '.join(CLASSES)}."),
    scope: str = typer.Option(None, "--scope", help="The scope a token needs for it."),
    json: bool = JsonOpt,
) -> None:
    """Register an action (unknown actions are always denied)."""

    async def go() -> None:
        async with policy_service() as svc:
            action = await svc.add_action(tenant, name, klass, scope)
        if json:
            print_json(_view(action))
        else:
            fields("Action added", _view(action))

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List the tenant's actions."""

    async def go() -> None:
        async with policy_service() as svc:
            found = await svc.list_actions(tenant)
        if json:
            print_json([_view(a) for a in found])
        else:
            table(
                "Actions", ["name", "class", "scope"], [(a.name, a.klass, a.scope) for a in found]
            )

    run(go)
