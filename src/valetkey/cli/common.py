"""What every command shares: opening the runtime, one-line errors, JSON or Rich output."""

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from valetkey.config import Settings
from valetkey.errors import ValetKeyError
from valetkey.identity.delegations import DelegationService
from valetkey.identity.service import IdentityService
from valetkey.ids import new_id
from valetkey.oauth.errors import OAuthError
from valetkey.policy.service import PolicyService
from valetkey.runtime import Runtime
from valetkey.vault.cipher import DecryptionError

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)

JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")
TenantOpt = typer.Option(..., "--tenant", "-t", help="Tenant name or id.")
OptionalTenantOpt = typer.Option(None, "--tenant", "-t", help="Tenant name or id.")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; expected errors become one line and exit code 1."""
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except (ValetKeyError, DecryptionError, ValueError) as exc:
        fail(str(exc))
    except OAuthError as exc:
        fail(f"{exc.error}: {exc.description}")
    except ValidationError as exc:
        fail(f"configuration: {exc.errors()[0].get('msg', exc)}")
    except OSError as exc:
        fail(f"{exc.__class__.__name__}: {exc}")
    except SQLAlchemyError as exc:
        fail(f"database: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")


def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"configuration VALETKEY_{str(first['loc'][0]).upper()}: {first['msg']}")


@asynccontextmanager
async def runtime() -> AsyncIterator[Runtime]:
    rt = await Runtime.open(settings())
    try:
        yield rt
    finally:
        await rt.close()


@asynccontextmanager
async def identity(
    correlation_id: str | None = None,
) -> AsyncIterator[tuple[Runtime, IdentityService]]:
    """The runtime and an identity service whose events share one correlation id."""
    async with runtime() as rt:
        yield rt, rt.identity(correlation_id or new_id("cor"))


@asynccontextmanager
async def policy_service() -> AsyncIterator[PolicyService]:
    async with runtime() as rt:
        yield rt.policies(new_id("cor"))


@asynccontextmanager
async def delegation_service() -> AsyncIterator[DelegationService]:
    async with runtime() as rt:
        yield rt.delegations(new_id("cor"))


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*["" if v is None else str(v) for v in row])
    console.print(grid)


def fields(title: str, data: dict[str, Any]) -> None:
    grid = Table(title=title, title_justify="left", show_header=False, box=None)
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in data.items():
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = "; ".join(f"{k} → {', '.join(map(str, v))}" for k, v in value.items())
        grid.add_row(key, "" if value is None else str(value))
    console.print(grid)
