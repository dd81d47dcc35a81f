"""What every command prints, written once.

- :func:`print_table`: a table on a terminal; piped (scripts, ``| cut -f``), a header line
  and one tab-separated line per row.
- :func:`error` / :func:`fail`: the one error format: one line on stderr (red on a
  terminal), whitespace collapsed, the message never read as markup.
- :func:`field_errors`: pydantic errors (of a ``ValidationError``, or the ``errors`` of a
  422 problem) as ``where: what`` lines, ``where`` named as the user wrote it (an option,
  a variable, a path in a file).
- The exit codes shared by the commands, the styles of statuses and levels, times and
  durations as the commands show them.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from pydantic import ValidationError

console = Console(soft_wrap=True, highlight=False)
# Errors go to stderr, so that `$(formula-ops tokens create … | tail -n 1)` never takes one
# for a token.
errors = Console(stderr=True, soft_wrap=True, highlight=False)

# The commands that follow a run exit 0 when it succeeded, 1 when it did not (or was
# refused) and 2 when that could not be found out (bad usage or input, server or database
# out of reach, token refused).
EXIT_SUCCEEDED = 0
EXIT_NOT_SUCCEEDED = 1
EXIT_UNKNOWN = 2

STATUS_STYLES = {
    "queued": "dim",
    "in_progress": "cyan",
    "pending": "dim",
    "success": "green",
    "failure": "red",
    "error": "red",
    "cancelled": "yellow",
    "rolled_back": "yellow",
    "skipped": "dim",
}
LEVEL_STYLES = {"ok": "green", "warning": "yellow", "critical": "red"}


# -- errors ----------------------------------------------------------------------------


def error(message: str) -> None:
    """``message`` as one line on stderr, red on a terminal."""
    errors.print(f"[red]{escape(' '.join(message.split()))}[/red]")


def note(message: str) -> None:
    """A line on stderr that is not the error itself (a hint, what to do next)."""
    errors.print(escape(" ".join(message.split())))


def fail(message: str, code: int = EXIT_UNKNOWN) -> NoReturn:
    """Print ``message`` as an error and end the command with ``code``."""
    error(message)
    raise typer.Exit(code)


def dotted(loc: Sequence[Any]) -> str:
    """A location as a path: ``services.0.config``."""
    return ".".join(str(part) for part in loc)


def field_errors(
    errors: ValidationError | Iterable[Mapping[str, Any]],
    name: Callable[[Sequence[Any]], str] = dotted,
) -> list[str]:
    """One ``where: what`` line per error; ``name`` turns an error's location into what
    the user wrote (an empty name leaves ``what`` alone). Input values are never shown:
    they may be secrets."""
    if not isinstance(errors, Iterable):  # a ValidationError (pydantic is not loaded here)
        errors = errors.errors(include_input=False, include_url=False)
    lines = []
    for item in errors:
        where = name(list(item.get("loc") or ()))
        what = " ".join(str(item.get("msg") or "invalid value").split())
        lines.append(f"{where}: {what}" if where else what)
    return lines


# -- tables ----------------------------------------------------------------------------


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    empty: str | None = None,
    styles: Mapping[int, Mapping[str, str]] | None = None,
    no_wrap_first: bool = False,
    fold_last: bool = False,
) -> None:
    """``rows`` under ``columns``: a table on a terminal (``empty`` instead, when given and
    there are no rows; cells in a column of ``styles`` coloured by value); otherwise a
    header line and one tab-separated line per row, tabs and newlines inside a cell
    turned into spaces."""
    if not sys.stdout.isatty():
        for row in (columns, *rows):
            print("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))
        return
    if not rows and empty is not None:
        console.print(empty)
        return
    table = Table(*columns)
    if no_wrap_first:
        table.columns[0].no_wrap = True
    if fold_last:
        table.columns[-1].overflow = "fold"
    for row in rows:
        table.add_row(
            *(
                styled(cell, styles[i]) if styles and i in styles else escape(cell)
                for i, cell in enumerate(row)
            )
        )
    console.print(table)


# -- values ----------------------------------------------------------------------------


def styled(value: str | None, styles: Mapping[str, str]) -> str:
    """``value`` as markup in its style (``-`` when empty)."""
    if not value:
        return "-"
    style = styles.get(value)
    return f"[{style}]{escape(value)}[/{style}]" if style else escape(value)


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time of a response (UTC when it names no zone), else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """``412 ms``, ``3.5 s`` or ``4 min 2 s``; ``-`` when either end is unknown."""
    if start is None or end is None:
        return "-"
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def utc(value: Any) -> str:
    """A response's time as ``YYYY-MM-DD HH:MM:SS`` in UTC, ``-`` when absent."""
    when = parse_time(value)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if when else "-"
