"""``formula-ops restore BACKUP_ID`` and ``formula-ops restores list``, through the API
(``FORMULA_OPS_URL``, ``FORMULA_OPS_TOKEN``; an admin's token).

A restore replaces a database's contents: the command asks for the database's name
(on the terminal, the question on stderr) unless ``--confirm`` gives it, and refuses to
guess without a terminal. ``restore --wait`` exits 0 when the restore succeeded, 1 when
it did not or was refused, 2 when that could not be found out.
"""

from __future__ import annotations

import sys
import uuid
from typing import Annotated, Any
from urllib.parse import quote

import click
import typer
from rich.markup import escape

from app.cli.client import ApiError, Client, collect, connect
from app.cli.output import (
    EXIT_NOT_SUCCEEDED,
    EXIT_SUCCEEDED,
    EXIT_UNKNOWN,
    STATUS_STYLES,
    console,
    duration,
    error,
    fail,
    parse_time,
    print_table,
    styled,
    utc,
)
from app.cli.runs import follow, print_plan
from app.runs.vocabulary import RunStatus

RESTORES = "/v1/restores"

restores = typer.Typer(
    help="Restores of backups, through the API (FORMULA_OPS_URL, FORMULA_OPS_TOKEN).",
    no_args_is_help=True,
)


def _describe_backup(client: Client, backup_id: str) -> None:
    """What is about to be restored, when the server says (best effort: the server
    checks the confirmation either way)."""
    try:
        backup = client.get_json(f"/v1/backups/{quote(backup_id, safe='')}")
    except ApiError:
        return
    target = f"{backup.get('environment') or 'the control plane'}/{backup.get('database')}"
    taken = utc(backup.get("created_at"))
    sys.stderr.write(f"Backup {backup_id} of {target}, taken {taken}, {backup.get('status')}.\n")


def _ask(client: Client, backup_id: str) -> str:
    if not sys.stdin.isatty():
        fail(
            "a restore replaces a database: pass --confirm with the database's name "
            "(no terminal to ask on)",
            EXIT_UNKNOWN,
        )
    _describe_backup(client, backup_id)
    answer: str = click.prompt(
        "This replaces the database's contents. Type the database's name to confirm",
        err=True,
        default="",
        show_default=False,
    )
    if not answer.strip():
        fail("Not restored: no database name typed", EXIT_NOT_SUCCEEDED)
    return answer.strip()


def restore(
    backup_id: Annotated[str, typer.Argument(help="The backup to restore.")],
    confirm: Annotated[
        str | None,
        typer.Option(
            "--confirm",
            help="The name of the database the backup restores over (asked when omitted).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Restore a backup whose restore drill failed."),
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (required with --force; audited).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until it ends; the exit code tells how.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the request and print the plan only.")
    ] = False,
) -> None:
    """Restore a backup over its environment's database (POST /v1/restores; admins).

    A safety backup of the database is taken first, the environment's services are
    stopped, the backup is restored (checked in a scratch database first), and the
    services are started again and checked. Prints the restore's URL; with --wait
    follows it and exits 0 on success, 1 on failure or refusal, 2 when unknown."""
    if force and not (reason or "").strip():
        fail("--force needs --reason (it is audited)", EXIT_UNKNOWN)
    with connect() as client:
        name = confirm if confirm is not None else _ask(client, backup_id)
        body: dict[str, Any] = {"backup_id": backup_id, "confirm": name, "force": force}
        if reason:
            body["reason"] = reason
        try:
            if dry_run:
                plan = client.request("POST", RESTORES, json={**body, "dry_run": True}, retries=2)
                print_plan({**plan.json(), "kind": "restore"})
                return
            headers = {"Idempotency-Key": f"restore-{uuid.uuid4().hex}"}
            response = client.request("POST", RESTORES, json=body, headers=headers, retries=3)
        except ApiError as exc:
            if exc.status in (404, 409, 422):
                error(f"Not restored: {exc.message}")
                raise typer.Exit(EXIT_NOT_SUCCEEDED) from None
            raise
        created = response.json()
        path = f"{RESTORES}/{quote(str(created['id']), safe='')}"
        console.print(
            f"Restore [bold]{escape(str(created['id']))}[/bold]: backup "
            f"{escape(str(created['backup_id']))} over {escape(str(created['target']))}, "
            f"{styled(str(created['status']), STATUS_STYLES)}"
        )
        console.print(f"URL: {escape(client.url(path))}")
        if not wait:
            return
        run = client.get_json(f"/v1/runs/{quote(str(created['id']), safe='')}")
        code = follow(client, run)
        final = client.get_json(path)
        console.print(
            f"Restore of {escape(str(final['target']))}: "
            f"{styled(str(final['status']), STATUS_STYLES)}"
            + (
                f", safety backup {escape(str(final['pre_restore_backup_id']))}"
                if final.get("pre_restore_backup_id")
                else ""
            )
        )
    succeeded = final["status"] == RunStatus.SUCCESS and code == EXIT_SUCCEEDED
    raise typer.Exit(EXIT_SUCCEEDED if succeeded else EXIT_NOT_SUCCEEDED)


@restores.command("list")
def list_restores(
    environment: Annotated[
        str | None, typer.Option(help="Only restores in this environment.")
    ] = None,
    status: Annotated[RunStatus | None, typer.Option(help="Only restores in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
) -> None:
    """The newest restores first."""
    with connect() as client:
        found = collect(
            client,
            RESTORES,
            limit,
            environment=environment,
            status=status.value if status else None,
        )
    columns = ("id", "target", "backup", "status", "forced", "requested by", "created", "took")
    rows = [
        (
            str(r["id"]),
            str(r["target"]),
            str(r["backup_id"]),
            str(r["status"]),
            "yes" if r.get("forced") else "no",
            str(r.get("requested_by") or "-"),
            utc(r.get("created_at")),
            duration(parse_time(r.get("started_at")), parse_time(r.get("finished_at"))),
        )
        for r in found
    ]
    print_table(columns, rows, empty="No restores.", styles={3: STATUS_STYLES}, no_wrap_first=True)
