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

Only what the command line needs to start is imported here: typer, rich and plain
values (httpx comes with the first API client, :mod:`app.cli.client`). A command that
works on the server side (the processes, the database, the OpenAPI document, the local
validation of ``apply -f``: :mod:`app.cli.serving`, :mod:`app.cli.declarative`) imports
it when it runs, so that ``--help`` and the commands that only talk to the API start in a
fraction of the application's import time, and ``api`` and ``worker`` hold no more of
the command line than they need.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

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

if TYPE_CHECKING:
    from pydantic import ValidationError

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
    from app.core.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    delimiter = str(Settings.model_config.get("env_nested_delimiter") or "__")
    path = delimiter.join(str(part) for part in loc if not isinstance(part, int))
    return f"{prefix}{path.upper()}" if path else "the settings"


def setting_errors(exc: ValidationError) -> list[str]:
    """One line per invalid ``FORMULA_OPS_*`` variable: its name and what is wrong, never
    its value (database URLs and the secret key are secrets)."""
    return [f"formula-ops: {line}" for line in field_errors(exc, _variable)]


def _settings_problem(exc: Exception) -> list[str] | None:
    """The lines that say which setting from the environment is invalid, when ``exc`` is
    about one; else None. Only the commands that need the settings load them (and
    pydantic-settings): without it loaded, ``exc`` is about something else."""
    if "pydantic_settings" not in sys.modules:
        return None
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from app.core.settings import Settings

    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        return setting_errors(exc)
    if isinstance(exc, SettingsError):  # a nested group's variable is not JSON
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        return [f"formula-ops: invalid settings, {exc}{cause}"]
    state_dir = sys.modules.get("app.core.state_dir")
    if state_dir is not None and isinstance(exc, state_dir.SharedDirectory):
        return [f"formula-ops: invalid FORMULA_OPS_STATE_DIR: {exc}"]
    return None


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except Exception as exc:
        lines = _settings_problem(exc)
        if lines is None:
            raise
        # A setting from the environment is invalid: say which, as a usage error.
        for line in lines:
            error(line)
        sys.exit(2)
