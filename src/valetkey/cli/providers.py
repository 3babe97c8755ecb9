"""`valetkey providers`: downstream platforms whose tokens live only in the vault."""

import sys
from pathlib import Path
from typing import Any

import orjson
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
from valetkey.clock import parse_duration
from valetkey.ids import new_id
from valetkey.vault.providers import preset_names

app = typer.Typer(help="Downstream platforms (OAuth configuration and API base).",
                  no_args_is_help=True)  # fmt: skip


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Short name, e.g. crm (also the gateway path)."),
    tenant: str = TenantOpt,
    preset: str = typer.Option(None, "--preset", help=f"One of: {', '.join(preset_names())}."),
    authorize_url: str = typer.Option(
        None, "--authorize-url", help="The platform's authorize URL."
    ),
    token_url: str = typer.Option(None, "--token-url", help="The platform's token URL."),
    revoke_url: str = typer.Option(None, "--revoke-url", help="The platform's revocation URL."),
    api_base: str = typer.Option(None, "--api-base", help="Base URL of the platform's API."),
    client_id: str = typer.Option(..., "--client-id", help="ValetKey's client id there."),
    client_secret_stdin: bool = typer.Option(
        False, "--client-secret-stdin", help="Read the client secret from stdin (required)."
    ),
    scope: list[str] = typer.Option(None, "--scope", "-s", help="A scope to request; repeatable."),
    directory: str = typer.Option(None, "--directory", help="Microsoft: the Entra directory id."),
    config: Path = typer.Option(
        None, "--config", help="A JSON file in the presets' format (docs/vault.md); flags win."
    ),
    token_auth_method: str = typer.Option(
        None, "--token-auth-method", help="client_secret_basic (default) or client_secret_post."
    ),
    pkce: bool = typer.Option(None, "--pkce/--no-pkce", help="Send PKCE S256 (default: on)."),
    scope_delimiter: str = typer.Option(None, "--scope-delimiter", help="' ' (default) or ','."),
    extra_param: list[str] = typer.Option(
        None, "--extra-param", help="KEY=VALUE added to the authorize URL; repeatable."
    ),
    rotating: bool = typer.Option(
        None,
        "--rotating-refresh/--static-refresh",
        help="Whether each refresh returns a new refresh token.",
    ),
    refresh_before: str = typer.Option(
        None, "--refresh-before", help="Refresh this long before expiry, e.g. 5m (default)."
    ),
    refresh_every: str = typer.Option(
        None, "--refresh-every", help="Refresh at least this often, e.g. 720h (idle revocation)."
    ),
    action: list[str] = typer.Option(
        None,
        "--action",
        help='A path mapping, "METHOD PATH ACTION RESOURCE", e.g. '
        '"GET /deals/{id} crm:deals.read crm:deals/{id}"; repeatable.',
    ),
    sanitize: bool = typer.Option(
        None, "--sanitize/--no-sanitize", help="Sanitise every text/HTML response."
    ),
    json: bool = JsonOpt,
) -> None:
    """Add a provider; its client secret is read from stdin and stored encrypted."""
    if not client_secret_stdin:
        fail("give --client-secret-stdin and pipe the secret in (never on the command line)")
    options = _options(config, authorize_url=authorize_url, token_url=token_url,
                       revoke_url=revoke_url, api_base=api_base,
                       token_auth_method=token_auth_method, pkce=pkce,
                       scope_delimiter=scope_delimiter, extra_param=extra_param,
                       rotating=rotating, refresh_before=refresh_before,
                       refresh_every=refresh_every, action=action, sanitize=sanitize)  # fmt: skip
    if preset is None and not all(options.get(k) for k in ("authorize_url", "token_url",
                                                           "api_base")):  # fmt: skip
        fail("give --preset, or --authorize-url, --token-url and --api-base (or --config)")
    secret = sys.stdin.readline().strip()

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.providers(new_id("cor"))
            provider = await svc.add(
                tenant, name, client_id=client_id, client_secret=secret, preset=preset,
                options=options, placeholders={"directory": directory} if directory else None,
                scopes=scope or [],
            )  # fmt: skip
            data = svc.view(provider)
        if json:
            print_json(data)
        else:
            fields("Provider added", {k: data[k] for k in ("id", "name", "api_base", "audience")})

    run(go)


def _options(config: Path | None, **flags: Any) -> dict[str, Any]:
    """The provider's options: the --config file, then the flags over it."""
    options: dict[str, Any] = {}
    if config is not None:
        try:
            loaded = orjson.loads(config.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            fail(f"--config: {exc}")
        if not isinstance(loaded, dict):
            fail("--config holds a JSON object (the presets' format)")
        options.update(loaded)
    for key in ("authorize_url", "token_url", "revoke_url", "api_base", "token_auth_method",
                "pkce", "scope_delimiter", "sanitize"):  # fmt: skip
        if flags[key] is not None:
            options[key] = flags[key]
    if flags["extra_param"]:
        pairs = [p.partition("=") for p in flags["extra_param"]]
        if any(not key or not sep for key, sep, _ in pairs):
            fail("--extra-param is KEY=VALUE")
        options["extra_authorize_params"] = {
            **options.get("extra_authorize_params", {}), **{k: v for k, _, v in pairs}
        }  # fmt: skip
    refresh = dict(options.get("refresh") or {})
    try:
        if flags["refresh_before"] is not None:
            refresh["before_expiry"] = parse_duration(flags["refresh_before"])
        if flags["refresh_every"] is not None:
            refresh["at_least_every_hours"] = parse_duration(flags["refresh_every"]) / 3600
    except ValueError as exc:
        fail(str(exc))
    if flags["rotating"] is not None:
        refresh["rotating"] = flags["rotating"]
    if refresh:
        options["refresh"] = refresh
    if flags["action"]:
        mappings = []
        for text in flags["action"]:
            parts = text.split()
            if len(parts) != 4:
                fail(f'--action is "METHOD PATH ACTION RESOURCE", not {text!r}')
            mappings.append(dict(zip(("method", "path", "action", "resource"), parts,
                                     strict=True)))  # fmt: skip
        options["actions"] = [*options.get("actions", []), *mappings]
    return options


@app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List the tenant's providers."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.providers(new_id("cor"))
            data = [svc.view(p) for p in await svc.list(tenant)]
        if json:
            print_json(data)
        else:
            rows = [(d["name"], d["preset"], d["api_base"], d["audience"]) for d in data]
            table("Providers", ["name", "preset", "api base", "audience"], rows)

    run(go)


@app.command("show")
def show(name: str, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Show a provider's configuration (never its client secret)."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.providers(new_id("cor"))
            data = svc.view(await svc.show(tenant, name))
        if json:
            print_json(data)
        else:
            fields(f"Provider {name}", data)

    run(go)


@app.command("remove")
def remove(name: str, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Remove a provider."""

    async def go() -> None:
        async with runtime() as rt:
            removed = await rt.providers(new_id("cor")).remove(tenant, name)
        if json:
            print_json({"id": removed.id, "name": removed.name, "removed": True})
        else:
            console.print(f"Provider {name} removed.")

    run(go)
