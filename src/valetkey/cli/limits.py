"""`valetkey limits`: rate limits, quotas and budgets, exact across processes and nodes."""

import typer

from valetkey.cli.common import JsonOpt, TenantOpt, fields, policy_service, print_json, run, table
from valetkey.policy.limits import Limit

app = typer.Typer(help="Rate limits, quotas and daily budgets.", no_args_is_help=True)


def _view(limit: Limit) -> dict[str, object]:
    return {
        "id": limit.id, "tenant": limit.tenant_id, "agent": limit.agent_id,
        "user": limit.user_id, "class": limit.action_class, "kind": limit.kind,
        "maximum": limit.maximum, "per": limit.per,
    }  # fmt: skip


@app.command("set")
def set_(
    tenant: str = TenantOpt,
    agent: str = typer.Option(None, "--agent", help="Only this agent (default: each agent)."),
    user: str = typer.Option(
        None, "--user", help="Only what agents do for this user; 'each' counts every user apart."
    ),
    klass: str = typer.Option(None, "--class", help="Only this class (read, send, …)."),
    maximum: int = typer.Option(None, "--max", help="At most N decisions allowed per window."),
    budget: int = typer.Option(None, "--budget", help="At most this cost per day."),
    per: str = typer.Option(..., "--per", help="minute, hour or day."),
    json: bool = JsonOpt,
) -> None:
    """Set a limit (replacing the one for the same agent, user, class and window)."""

    async def go() -> None:
        async with policy_service() as svc:
            limit = await svc.set_limit(tenant, agent=agent, user=user, klass=klass,
                                        maximum=maximum, budget=budget, per=per)  # fmt: skip
        if json:
            print_json(_view(limit))
        else:
            fields("Limit set", _view(limit))

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List the tenant's limits."""

    async def go() -> None:
        async with policy_service() as svc:
            found = await svc.list_limits(tenant)
        if json:
            print_json([_view(lim) for lim in found])
        else:
            table("Limits", ["id", "agent", "user", "class", "kind", "maximum", "per"],
                  [(lim.id, lim.agent_id or "each", lim.user_id or "any",
                    lim.action_class or "any", lim.kind, lim.maximum, lim.per)
                   for lim in found])  # fmt: skip

    run(go)
