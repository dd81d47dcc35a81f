"""Commands for the operator of the host, on the database directly: ``migrate``,
``tokens create|list|revoke`` (so the first admin token can exist) and ``audit verify``;
and ``openapi``, which writes the document generated from the application."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from app.auth.roles import Role
from app.cli.output import console, dotted, error, fail, field_errors, note, print_table

# What the commands do needs the database layer and the domains: each command imports
# it when it runs, so that the command line starts without it.
if TYPE_CHECKING:
    from app.audit import service as audit_service
    from app.auth.principal import Principal
    from app.core.db import UnitOfWork
    from app.tokens.schemas import Token

tokens = typer.Typer(help="Manage API tokens (directly in the database).", no_args_is_help=True)
audit = typer.Typer(help="The audit trail.", no_args_is_help=True)
T = TypeVar("T")
# Exit codes as the commands that work through the API: 1 refused, 2 bad input (an
# unknown id, an invalid value) or the database out of reach.
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


@asynccontextmanager
async def _database() -> AsyncIterator[Callable[[], UnitOfWork]]:
    from app.audit.sealer import seal_once
    from app.core.db import UnitOfWork, create_engine, make_sessionmaker, write_engine
    from app.core.migrate import schema_is_current
    from app.core.settings import get_settings

    settings = get_settings()
    engine = create_engine(settings)
    try:
        if not await schema_is_current(engine):
            fail("The database is not migrated: run `formula-ops migrate`.", EXIT_BAD_INPUT)
        sessionmaker = make_sessionmaker(write_engine(engine))
        yield lambda: UnitOfWork(sessionmaker)
        # What the command appended to the audit trail is sealed before it exits (a
        # worker or an API process would do it otherwise, if one runs).
        try:
            await seal_once(engine)
        except Exception:
            note("The audit trail could not be sealed now; a worker or an API process will.")
    finally:
        await engine.dispose()


def _cli_principal() -> Principal:
    from app.auth.principal import Principal

    return Principal.system(f"cli:{getpass.getuser()}")


def _run(work: Callable[[Callable[[], UnitOfWork]], Awaitable[T]]) -> T:
    from sqlalchemy.exc import OperationalError

    from app.core.errors import AppError

    async def main() -> T:
        async with _database() as unit_of_work:
            return await work(unit_of_work)

    try:
        return asyncio.run(main())
    except AppError as exc:
        message = f"{exc.title}: {exc.detail}" if exc.detail else exc.title
        fail(message, EXIT_BAD_INPUT if exc.status in (404, 422) else EXIT_REFUSED)
    except OperationalError as exc:
        fail(f"The database is unreachable ({type(exc.orig).__name__}).", EXIT_BAD_INPUT)


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
    scope: Annotated[
        str | None,
        typer.Option(
            help="Limit the token to one capability: `alerts` (the Alertmanager receiver only)."
        ),
    ] = None,
) -> None:
    """Create a token and print it once."""
    from pydantic import ValidationError

    from app.tokens import service as token_service
    from app.tokens.schemas import TokenCreate

    if no_expiry and expires_in_days:
        fail("Give either --expires-in-days or --no-expiry.", EXIT_BAD_INPUT)
    try:
        body = TokenCreate(
            name=name,
            role=role,
            environment=environment,
            expires_in_days="never" if no_expiry else expires_in_days or 90,
            scope=scope,
        )
    except ValidationError as exc:
        for line in field_errors(exc, _option):
            error(line)
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
    from app.core.pagination import CursorParams, decode_cursor
    from app.tokens import service as token_service
    from app.tokens.presenters import token_out

    async def work(unit_of_work: Callable[[], UnitOfWork]) -> list[Token]:
        found: list[Token] = []
        cursor = None
        async with unit_of_work() as uow:
            while True:
                rows, next_cursor = await token_service.list_page(
                    uow.session, CursorParams(limit=200, cursor=cursor)
                )
                found.extend(token_out(t) for t in rows)
                if next_cursor is None:
                    return found
                cursor = decode_cursor(next_cursor)

    columns = ("id", "name", "role", "environment", "state", "expires", "last used", "scope")
    rows = [
        (
            token.id,
            token.name,
            token.role.value,
            token.environment or "-",
            token.state,
            _when(token.expires_at),
            _when(token.last_used_at),
            token.scope or "-",
        )
        for token in _run(work)
    ]
    print_table(columns, rows, no_wrap_first=True)


@tokens.command("revoke")
def revoke_token(token_id: Annotated[str, typer.Argument(help="The token's id.")]) -> None:
    """Revoke a token; it is refused from its next request on."""
    from app.tokens import service as token_service

    async def work(unit_of_work: Callable[[], UnitOfWork]) -> None:
        async with unit_of_work() as uow:
            await token_service.revoke(uow, _cli_principal(), token_id)

    _run(work)
    console.print(f"Revoked token {token_id}.")


@audit.command("verify")
def verify_audit() -> None:
    """Check every hash and link of the audit chain; exit 1 at the first broken link."""
    from app.audit import service as audit_service
    from app.core.settings import get_settings

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


def _option(loc: Sequence[Any]) -> str:
    """The command-line option of a field of the request body."""
    return "--" + (dotted(loc) or "input").replace("_", "-")


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


# -- migrate, openapi ------------------------------------------------------------------


def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Bring the database schema to REVISION (default: head)."""
    from app.core import migrate as migrations
    from app.core.logging import configure_logging
    from app.core.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format or "text")
    migrations.upgrade(settings, revision)
    typer.echo(f"database at {revision}")


def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the document.")] = Path(
        "openapi/openapi.json"
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the file differs instead of writing it.")
    ] = False,
) -> None:
    """Write the OpenAPI document generated from the application."""
    document = render_openapi()
    if check:
        current = output.read_text() if output.exists() else ""
        if current != document:
            fail(f"{output} is stale; run `formula-ops openapi`", EXIT_REFUSED)
        typer.echo(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(document)
    typer.echo(f"wrote {output}")


def render_openapi() -> str:
    from app.core.settings import Settings
    from app.main import create_app

    document = create_app(Settings()).openapi()
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
