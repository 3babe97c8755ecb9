"""`valetkey policies`: the tenant's Cedar policies, validated, versioned and testable."""

from pathlib import Path

import orjson
import typer

from valetkey.cli.common import (
    JsonOpt,
    TenantOpt,
    console,
    fail,
    fields,
    policy_service,
    print_json,
    run,
    table,
)
from valetkey.clock import iso
from valetkey.policy.service import CaseResult

app = typer.Typer(help="Cedar policies: validate, push, show, history, rollback, test.",
                  no_args_is_help=True)  # fmt: skip
FileArg = typer.Argument(..., exists=True, dir_okay=False, help="A Cedar policy file.")


@app.command("validate")
def validate_(file: Path = FileArg, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Check a policy file against the tenant's schema (exit 1 when it does not validate)."""
    text = file.read_text()

    async def go() -> list[str]:
        async with policy_service() as svc:
            return await svc.validate(tenant, text)

    errors = run(go)
    if json:
        print_json({"valid": not errors, "errors": errors})
    elif errors:
        for error in errors:
            console.print(f"[red]✗[/red] {error}")
    else:
        console.print("[green]✓[/green] valid")
    if errors:
        raise typer.Exit(1)


@app.command("push")
def push(
    file: Path = FileArg,
    tenant: str = TenantOpt,
    note: str = typer.Option("", "--note", help="Why, for the history."),
    entities: Path = typer.Option(
        None,
        "--entities",
        exists=True,
        dir_okay=False,
        help="Cedar entities JSON: the tenant's own directory (users, roles) for AuthZEN.",
    ),
    json: bool = JsonOpt,
) -> None:
    """Validate and activate a policy file as the tenant's next version."""
    text = file.read_text()
    try:
        stored = orjson.loads(entities.read_bytes()) if entities else None
    except orjson.JSONDecodeError as exc:
        fail(f"{entities}: not JSON ({exc})")

    async def go() -> int:
        async with policy_service() as svc:
            return await svc.push(tenant, text, note, stored)

    version = run(go)
    if json:
        print_json({"version": version, "active": True})
    else:
        console.print(f"Policy version {version} is active.")


@app.command("show")
def show(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Show the active policy set (the built-in default until one is pushed)."""

    async def go() -> dict[str, object]:
        async with policy_service() as svc:
            return await svc.show(tenant)

    data = run(go)
    if json:
        print_json(data)
    else:
        label = "default" if data["default"] else f"version {data['version']}"
        console.print(f"[bold]Active policies ({label})[/bold]\n")
        console.print(str(data["text"]), markup=False, highlight=False)


@app.command("history")
def history(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List the tenant's policy versions."""

    async def go() -> list[dict[str, object]]:
        async with policy_service() as svc:
            return await svc.history(tenant)

    versions = run(go)
    if json:
        print_json([{k: v for k, v in h.items() if k != "text"} for h in versions])
    else:
        table("Policy versions", ["version", "active", "created", "note"],
              [(v["version"], "✓" if v["active"] else "", iso(float(str(v["created_at"]))),
                v["note"]) for v in versions])  # fmt: skip


@app.command("rollback")
def rollback(
    tenant: str = TenantOpt,
    to: int = typer.Option(None, "--to", help="The version to activate (default: the previous)."),
    json: bool = JsonOpt,
) -> None:
    """Activate an earlier policy version."""

    async def go() -> int:
        async with policy_service() as svc:
            return await svc.rollback(tenant, to)

    version = run(go)
    if json:
        print_json({"version": version, "active": True})
    else:
        console.print(f"Policy version {version} is active.")


@app.command("test")
def run_cases(
    cases: Path = typer.Argument(..., exists=True, dir_okay=False, help="CASES.json"),
    tenant: str = TenantOpt,
    policies: Path = typer.Option(
        None,
        "--policies",
        exists=True,
        dir_okay=False,
        help="Test this policy file instead of the active one (before pushing it).",
    ),
    json: bool = JsonOpt,
) -> None:
    """Run data-driven cases (intent → expected decision); exit 1 when any fails."""
    try:
        loaded = orjson.loads(cases.read_bytes())
    except orjson.JSONDecodeError as exc:
        fail(f"{cases}: not JSON ({exc})")
    text = policies.read_text() if policies else None

    async def go() -> list[CaseResult]:
        async with policy_service() as svc:
            return await svc.test(tenant, loaded, text)

    results = run(go)
    failed = sum(1 for r in results if not r.passed)
    if json:
        print_json({"passed": len(results) - failed, "failed": failed,
                    "cases": [_case(r) for r in results]})  # fmt: skip
    else:
        table("Policy tests", ["", "case", "expected", "got", "reasons"],
              [("✓" if r.passed else "✗", r.name, r.expected, r.got,
                ", ".join(x["code"] for x in r.reasons)) for r in results])  # fmt: skip
        fields("Result", {"passed": len(results) - failed, "failed": failed})
    if failed:
        raise typer.Exit(1)


def _case(result: CaseResult) -> dict[str, object]:
    return {
        "name": result.name,
        "expected": result.expected,
        "got": result.got,
        "passed": result.passed,
        "reasons": result.reasons,
        "policies": result.policies,
    }
