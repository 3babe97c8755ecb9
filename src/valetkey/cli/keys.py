"""`valetkey keys`: the signing keys behind every token."""

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

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


@app.command("rotate-master")
def rotate_master(json: bool = JsonOpt) -> None:
    """Re-wrap every stored data key under a new master key (resumable if interrupted).

    Restart every ValetKey process afterwards: they load the master key at start. The old
    key is kept as master.key.previous; sign-in sessions and DPoP nonces start over."""

    async def go() -> dict[str, object]:
        async with runtime() as rt:
            with Progress(
                TextColumn("re-wrapping"), BarColumn(), MofNCompleteColumn(),
                console=console, disable=json, transient=True,
            ) as bar:  # fmt: skip
                task = bar.add_task("re-wrapping", total=None)
                return await rt.rotate_master(
                    lambda done, total: bar.update(task, completed=done, total=total)
                )

    result = run(go)
    if json:
        print_json(result)
    else:
        console.print(
            f"Master key {result['key_id']} is in use; {result['rewrapped']} of "
            f"{result['records']} records re-wrapped. Restart every ValetKey process."
        )
