"""`valetkey issuers`: the company IdPs whose assertions identify a tenant's users."""

import typer

from valetkey.cli import views
from valetkey.cli.common import (
    JsonOpt,
    TenantOpt,
    delegation_service,
    fields,
    print_json,
    run,
    table,
)

app = typer.Typer(help="Trusted identity-assertion issuers.", no_args_is_help=True)


@app.command("add")
def add(
    issuer: str = typer.Argument(..., help="The issuer identifier (the assertions' iss)."),
    tenant: str = TenantOpt,
    jwks_uri: str = typer.Option(..., "--jwks-uri", help="Where its signing keys are."),
    audience: str = typer.Option(None, "--audience", help="Required aud of its assertions."),
    claim: str = typer.Option("email", "--claim", help="The claim that names the user."),
    json: bool = JsonOpt,
) -> None:
    """Trust an issuer's signed assertions for this tenant's users."""

    async def go() -> None:
        async with delegation_service() as svc:
            record = await svc.add_issuer(tenant, issuer, jwks_uri, audience, claim)
        if json:
            print_json(views.issuer(record))
        else:
            fields("Issuer trusted", views.issuer(record))

    run(go)


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List trusted issuers."""

    async def go() -> None:
        async with delegation_service() as svc:
            records = await svc.list_issuers(tenant)
        if json:
            print_json([views.issuer(r) for r in records])
        else:
            table(
                "Trusted issuers",
                ["issuer", "jwks_uri", "audience", "claim"],
                [(r.issuer, r.jwks_uri, r.audience, r.claim) for r in records],
            )

    run(go)
