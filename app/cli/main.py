"""The ``formula-ops`` command line: its commands, one module per group, wired here.

- :mod:`app.cli.server`: ``serve``, ``api``, ``worker``;
- :mod:`app.cli.admin`: on the database directly: ``migrate``, ``tokens``, ``audit verify``;
  and ``openapi``;
- :mod:`app.cli.runs`: ``runs list|watch``, ``health-check``;
- :mod:`app.cli.deploy`: ``deploy``, ``apply``;
- :mod:`app.cli.ops`: ``rollback``, ``cancel``, ``unpin``, ``audit list``;
- :mod:`app.cli.status`: ``status`` (the public status, no token);
- :mod:`app.cli.backups`: ``backup``, ``backups list|show|verify|delete``.
- :mod:`app.cli.restore`: ``restore``, ``restores list``;
- :mod:`app.cli.runbooks`: ``runbooks list|show``, ``run``;
- :mod:`app.cli.schedules`: ``schedules list|show``.

What they print goes through :mod:`app.cli.output`; the API through :mod:`app.cli.client`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from app.cli.admin import audit, migrate, openapi, tokens
from app.cli.backups import backup, backups
from app.cli.deploy import apply, deploy
from app.cli.ops import audit_list, cancel, rollback, unpin
from app.cli.output import error, field_errors
from app.cli.restore import restore, restores
from app.cli.runbooks import run, runbooks
from app.cli.runs import health_check, runs
from app.cli.schedules import schedules
from app.cli.server import api, serve, worker
from app.cli.status import status
from app.core.settings import Settings

cli = typer.Typer(
    name="formula-ops",
    help="Formula Ops: the operations runbook as a versioned, queued, audited REST API.",
    no_args_is_help=True,
    add_completion=False,
)

cli.add_typer(tokens, name="tokens")
cli.add_typer(audit, name="audit")
cli.add_typer(runs, name="runs")
cli.add_typer(backups, name="backups")
cli.command("health-check")(health_check)
cli.command("deploy")(deploy)
cli.command("apply")(apply)
cli.command("rollback")(rollback)
cli.command("cancel")(cancel)
cli.command("unpin")(unpin)
cli.command("status")(status)
cli.command("backup")(backup)
cli.command("restore")(restore)
cli.add_typer(restores, name="restores")
cli.add_typer(runbooks, name="runbooks")
cli.command("run")(run)
cli.add_typer(schedules, name="schedules")
audit.command("list")(audit_list)
cli.command()(serve)
cli.command()(api)
cli.command()(worker)
cli.command()(migrate)
cli.command()(openapi)


def _variable(loc: Sequence[Any]) -> str:
    """The ``FORMULA_OPS_*`` variable of a setting's location."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    delimiter = str(Settings.model_config.get("env_nested_delimiter") or "__")
    path = delimiter.join(str(part) for part in loc if not isinstance(part, int))
    return f"{prefix}{path.upper()}" if path else "the settings"


def setting_errors(exc: ValidationError) -> list[str]:
    """One line per invalid ``FORMULA_OPS_*`` variable: its name and what is wrong, never
    its value (database URLs and the secret key are secrets)."""
    return [f"formula-ops: {line}" for line in field_errors(exc, _variable)]


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        # A setting from the environment is invalid: say which, as a usage error.
        for line in setting_errors(exc):
            error(line)
        sys.exit(2)
    except SettingsError as exc:  # a nested group's variable is not JSON
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        error(f"formula-ops: invalid settings, {exc}{cause}")
        sys.exit(2)
