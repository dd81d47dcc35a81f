"""Commands that work on the database directly, for the operator of the host:
``tokens create|list|revoke`` (so the first admin token can exist) and ``audit verify``."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import OperationalError

from app.audit import service as audit_service
from app.audit.sealer import seal_once
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.db import UnitOfWork, create_engine, make_sessionmaker, write_engine
from app.core.errors import AppError
from app.core.migrate import schema_is_current
from app.core.pagination import CursorParams, decode_cursor
from app.core.settings import get_settings
from app.tokens import service as token_service
from app.tokens.schemas import Token, TokenCreate

tokens = typer.Typer(help="Manage API tokens (directly in the database).", no_args_is_help=True)
audit = typer.Typer(help="The audit trail.", no_args_is_help=True)
console = Console()
# Errors go to stderr, so that `$(formula-ops tokens create … | tail -n 1)` never takes one
# for a token.
errors = Console(stderr=True)
T = TypeVar("T")
# Exit codes as the commands that work through the API: 1 refused, 2 bad input (an
# unknown id, an invalid value) or the database out of reach.
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


@asynccontextmanager
async def _database() -> AsyncIterator[Callable[[], UnitOfWork]]:
    settings = get_settings()
    engine = create_engine(settings)
    try:
        if not await schema_is_current(engine):
            errors.print("[red]The database is not migrated: run `formula-ops migrate`.[/red]")
            raise typer.Exit(EXIT_BAD_INPUT)
        sessionmaker = make_sessionmaker(write_engine(engine))
        yield lambda: UnitOfWork(sessionmaker)
        # What the command appended to the audit trail is sealed before it exits (a
        # worker or an API process would do it otherwise, if one runs).
        try:
            await seal_once(engine)
        except Exception:
            errors.print("[yellow]The audit trail could not be sealed now; a worker will.[/yellow]")
    finally:
        await engine.dispose()


def _cli_principal() -> Principal:
    return Principal.system(f"cli:{getpass.getuser()}")


def _run(work: Callable[[Callable[[], UnitOfWork]], Awaitable[T]]) -> T:
    async def main() -> T:
        async with _database() as unit_of_work:
            return await work(unit_of_work)

    try:
        return asyncio.run(main())
    except AppError as exc:
        errors.print(f"[red]{escape(exc.title)}: {escape(exc.detail or '')}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT if exc.status in (404, 422) else EXIT_REFUSED) from None
    except OperationalError as exc:
        errors.print(f"[red]The database is unreachable ({type(exc.orig).__name__}).[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None


@tokens.command("create")
def create_token(
    role: Annotated[Role, typer.Option(help="viewer, deployer, operator or admin.")],
    name: Annotated[str, typer.Option(help="What the token is for.")],
    environment: Annotated[
        str | None, typer.Option(help="Restrict the token to one environment.")
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, max=3650, help="Default: 90 days.")
    ] = None,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="Never expires.")] = False,
) -> None:
    """Create a token and print it once."""
    if no_expiry and expires_in_days:
        errors.print("[red]Give either --expires-in-days or --no-expiry.[/red]")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        body = TokenCreate(
            name=name,
            role=role,
            environment=environment,
            expires_in_days="never" if no_expiry else expires_in_days or 90,
        )
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "input"
            errors.print(f"[red]--{where.replace('_', '-')}: {escape(error['msg'])}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None

    async def work(unit_of_work: Callable[[], UnitOfWork]) -> tuple[str, str]:
        async with unit_of_work() as uow:
            token, value = await token_service.create(uow, _cli_principal(), body)
            return token.id, value

    token_id, value = _run(work)
    console.print(f"Created token [bold]{token_id}[/bold] ({role.value}). It is shown only now:")
    print(value, flush=True)


@tokens.command("list")
def list_tokens() -> None:
    """List every token with its role, state and last use."""

    async def work(unit_of_work: Callable[[], UnitOfWork]) -> list[Token]:
        found: list[Token] = []
        cursor = None
        async with unit_of_work() as uow:
            while True:
                rows, next_cursor = await token_service.list_page(
                    uow.session, CursorParams(limit=200, cursor=cursor)
                )
                found.extend(token_service.to_schema(t) for t in rows)
                if next_cursor is None:
                    return found
                cursor = decode_cursor(next_cursor)

    columns = ("id", "name", "role", "environment", "state", "expires", "last used")
    rows = [
        (
            token.id,
            token.name,
            token.role.value,
            token.environment or "-",
            token.state,
            _when(token.expires_at),
            _when(token.last_used_at),
        )
        for token in _run(work)
    ]
    if not sys.stdout.isatty():  # scripts and pipes: one tab-separated line per token
        for row in (columns, *rows):
            print("\t".join(row))
        return
    table = Table(*columns)
    table.columns[0].no_wrap = True
    for row in rows:
        table.add_row(*row)
    console.print(table)


@tokens.command("revoke")
def revoke_token(token_id: Annotated[str, typer.Argument(help="The token's id.")]) -> None:
    """Revoke a token; it is refused from its next request on."""

    async def work(unit_of_work: Callable[[], UnitOfWork]) -> None:
        async with unit_of_work() as uow:
            await token_service.revoke(uow, _cli_principal(), token_id)

    _run(work)
    console.print(f"Revoked token {token_id}.")


@audit.command("verify")
def verify_audit() -> None:
    """Check every hash and link of the audit chain; exit 1 at the first broken link."""

    bound = get_settings().audit_seal_bound_seconds

    async def work(unit_of_work: Callable[[], UnitOfWork]) -> audit_service.Verification:
        async with unit_of_work() as uow:
            return await audit_service.verify(uow.session, bound_seconds=bound)

    result = _run(work)
    if result.valid:
        pending = f" ({result.unsealed} newer events not sealed yet)" if result.unsealed else ""
        console.print(
            f"[green]Audit trail intact[/green]: {result.checked} events verified.{pending}"
        )
        return
    assert result.broken is not None
    console.print(
        f"[red]Audit trail broken at event {result.broken.seq}[/red]"
        f"{f' (id {result.broken.id})' if result.broken.id else ''}: {result.broken.reason}. "
        f"{result.checked} events before it verified."
    )
    raise typer.Exit(1)


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"
