"""`valetkey keys`: the signing keys behind every token."""

import typer

from valetkey.cli.common import JsonOpt, console, print_json, run, runtime, table
from valetkey.clock import iso
from valetkey.ids import new_id

app = typer.Typer(help="Signing keys.", no_args_is_help=True)


@app.command("rotate")
def rotate(
    alg: str = typer.Option(None, "--alg", help="ES256 (default) or EdDSA."),
    json: bool = JsonOpt,
) -> None:
    """Sign with the pre-published next key; keep the old public key until its tokens expire."""

    async def go() -> None:
        async with runtime() as rt:
            new, old = await rt.keys.rotate(alg, new_id("cor"))
        data = {"kid": new.kid, "alg": new.alg, "previous_kid": old.kid if old else None}
        if json:
            print_json(data)
        else:
            console.print(f"Now signing with {new.kid} ({new.alg}).")
            if old:
                console.print(f"{old.kid} stays in /jwks until its last token has expired.")

    run(go)


@app.command("list")
def list_(json: bool = JsonOpt) -> None:
    """List signing keys and their state (public parts only)."""

    async def go() -> None:
        async with runtime() as rt:
            await rt.keys.ensure()
            keys = await rt.oauth_store.list_keys()
        data = [
            {
                "kid": k.kid,
                "alg": k.alg,
                "status": k.status,
                "created_at": iso(k.created_at),
                "published_until": iso(k.publish_until) if k.publish_until else None,
            }
            for k in keys
        ]
        if json:
            print_json(data)
        else:
            table(
                "Signing keys",
                ["kid", "alg", "status", "published until"],
                [(d["kid"], d["alg"], d["status"], d["published_until"] or "") for d in data],
            )

    run(go)
