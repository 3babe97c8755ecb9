"""`valetkey issuers`: the company IdPs whose assertions identify a tenant's users."""

import sys

import typer

from valetkey.cli import views
from valetkey.cli.common import (
    JsonOpt,
    TenantOpt,
    delegation_service,
    fail,
    fields,
    print_json,
    run,
    runtime,
    table,
)
from valetkey.ids import new_id

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


@app.command("login")
def login(
    issuer: str = typer.Argument(..., help="A trusted issuer (issuers add) of the tenant."),
    tenant: str = TenantOpt,
    client_id: str = typer.Option(..., "--client-id", help="ValetKey's client at the issuer."),
    client_secret_stdin: bool = typer.Option(
        False, "--client-secret-stdin", help="Read the client secret from stdin (required)."
    ),
    label: str = typer.Option(None, "--label", help="The button's text, e.g. 'Acme SSO'."),
    json: bool = JsonOpt,
) -> None:
    """Let the tenant's people sign in to the console through this issuer (OpenID Connect,
    code + PKCE). Register the printed redirect URI at the issuer; users must already exist,
    named by the issuer's claim."""
    if not client_secret_stdin:
        fail("give --client-secret-stdin and pipe the secret in (never on the command line)")
    secret = sys.stdin.readline().strip()

    async def go() -> None:
        async with runtime() as rt:
            record = await rt.console_login(new_id("cor")).enable(
                tenant, issuer, client_id, secret, label
            )
            redirect_uri = f"{rt.settings.issuer}/console/login/sso/callback"
        view = {**views.issuer(record), "redirect_uri": redirect_uri}
        if json:
            print_json(view)
        else:
            fields("Console sign-in enabled", view)

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
