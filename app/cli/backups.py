"""``formula-ops backup`` and ``formula-ops backups list|show|verify|delete``, through the
API (``FORMULA_OPS_URL``, ``FORMULA_OPS_TOKEN``).

Exit codes as the other commands: 0 done (with ``--wait``: the backup or the drill
succeeded), 1 not done (refused: no database, not verifiable, the newest verified
backup; or the backup or drill failed), 2 when that could not be found out (bad usage,
unknown id, server unreachable, token refused).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape

from app.cli.client import ApiError, Client, connect
from app.cli.output import (
    EXIT_NOT_SUCCEEDED,
    EXIT_SUCCEEDED,
    STATUS_STYLES,
    console,
    error,
    print_table,
    styled,
    utc,
)
from app.cli.runs import follow

BACKUPS = "/v1/backups"
BACKUP_STYLES = {**STATUS_STYLES, "unverifiable": "red", "deleted": "dim"}
# Refusals: the request was understood and said no; nothing was done.
REFUSED = (404, 409, 422)

backups = typer.Typer(
    help="Backups of the environments' databases and of the control plane, through the API.",
    no_args_is_help=True,
)


def _path(backup_id: str) -> str:
    return f"{BACKUPS}/{quote(backup_id, safe='')}"


def _target(backup: dict[str, Any]) -> str:
    return f"{backup.get('environment') or '(control plane)'}/{backup.get('database', '')}"


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _refused(what: str, exc: ApiError) -> typer.Exit:
    error(f"{what}: {exc.message}")
    return typer.Exit(EXIT_NOT_SUCCEEDED)


def _summary(backup: dict[str, Any]) -> None:
    status = str(backup.get("status"))
    console.print(
        f"Backup [bold]{escape(str(backup['id']))}[/bold] of {escape(_target(backup))}: "
        f"{styled(status, BACKUP_STYLES)}"
    )
    if backup.get("sha256"):
        console.print(
            f"  {escape(_size(backup.get('size_bytes')))}, SHA-256 {escape(backup['sha256'])}"
        )
    console.print(f"  Stored at: {escape(str(backup.get('storage_url')))}")
    if backup.get("error"):
        console.print(f"  Error: {escape(str(backup['error']))}")


def _follow_run(client: Client, run_id: str) -> int:
    run = client.get_json(f"/v1/runs/{quote(run_id, safe='')}")
    return follow(client, run)


# -- backup ------------------------------------------------------------------------------


def backup(
    environment: Annotated[
        str | None, typer.Option("--env", "-e", help="The environment whose database.")
    ] = None,
    own: Annotated[
        bool, typer.Option("--self", help="The control plane's own database instead.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until it ends; the exit code tells how.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print where it would go; take nothing.")
    ] = False,
) -> None:
    """Back up a database now (POST /v1/backups): an environment's (--env) or the control
    plane's own (--self).

    Prints the backup's id and URL; with --wait follows it and exits 0 when it was stored
    and read back, 1 when it failed or was refused, 2 when that could not be found out."""
    if (environment is None) == (not own):
        raise typer.BadParameter("give either --env ENVIRONMENT or --self")
    body: dict[str, Any] = {"self": True} if own else {"environment": environment}
    with connect() as client:
        if dry_run:
            # Nothing is created: the request is safe to repeat without a key.
            try:
                plan = client.request(
                    "POST", BACKUPS, json={**body, "dry_run": True}, retries=2
                ).json()
            except ApiError as exc:
                if exc.status in REFUSED:
                    raise _refused("Nothing to back up", exc) from None
                raise
            console.print(
                f"Dry run: {escape(_target(plan))} ({escape(plan['engine'])}, "
                f"{escape(plan['format'])}) would be stored at "
                f"{escape(plan['storage_url'])}; nothing was written."
            )
            return
        headers = {"Idempotency-Key": f"backup-{uuid.uuid4()}"}
        try:
            response = client.request("POST", BACKUPS, json=body, headers=headers, retries=5)
        except ApiError as exc:
            if exc.status in REFUSED:
                raise _refused("Not backed up", exc) from None
            raise
        created = response.json()
        console.print(
            f"Backup [bold]{escape(str(created['id']))}[/bold] of "
            f"{escape(_target(created))}: {styled(str(created['status']), BACKUP_STYLES)}"
        )
        console.print(f"URL: {escape(client.url(_path(str(created['id']))))}")
        if not wait:
            raise typer.Exit(EXIT_SUCCEEDED)
        code = _follow_run(client, str(created["run_id"]))
        final = client.get_json(_path(str(created["id"])))
        _summary(final)
    raise typer.Exit(
        EXIT_SUCCEEDED if final["status"] == "success" and code == 0 else EXIT_NOT_SUCCEEDED
    )


# -- backups list|show|verify|delete -----------------------------------------------------


@backups.command("list")
def list_backups(
    environment: Annotated[
        str | None, typer.Option("--env", "-e", help="Only this environment's.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only in this status: in_progress, success, failure, unverifiable, deleted."
        ),
    ] = None,
    own: Annotated[
        bool, typer.Option("--self", help="Only the control plane's own backups.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
) -> None:
    """The newest backups first, with target, status, size and when they were verified."""
    filters = {"environment": environment, "status": status, "self": "true" if own else None}
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    with connect() as client:
        while len(found) < limit:
            params = {**filters, "limit": min(200, limit - len(found)), "cursor": cursor}
            page = client.request("GET", BACKUPS, params=params, retries=2).json()
            found.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
    columns = ("id", "target", "status", "origin", "size", "created", "verified")
    rows = [
        (
            str(b["id"]),
            _target(b),
            str(b["status"]),
            str(b.get("origin", "")),
            _size(b.get("size_bytes")),
            utc(b.get("created_at")),
            utc(b.get("verified_at")) if b.get("verified_at") else "-",
        )
        for b in found
    ]
    print_table(columns, rows, empty="No backups.", styles={2: BACKUP_STYLES}, no_wrap_first=True)


@backups.command("show")
def show(backup_id: Annotated[str, typer.Argument(help="The backup's id.")]) -> None:
    """Everything about one backup: where it is stored, its size and SHA-256, row counts,
    its last restore drill."""
    with connect() as client:
        found = client.get_json(_path(backup_id))
    fields = (
        "id",
        "status",
        "origin",
        "environment",
        "database",
        "engine",
        "format",
        "storage_url",
        "size_bytes",
        "sha256",
        "duration_seconds",
        "created_at",
        "finished_at",
        "verified_at",
        "restore_seconds",
        "verification_run_id",
        "run_id",
        "deleted_at",
        "deleted_by",
        "error",
    )
    rows = [(name, "-" if found.get(name) is None else str(found[name])) for name in fields]
    rows += [(f"rows {table}", str(count)) for table, count in sorted(found["row_counts"].items())]
    print_table(("field", "value"), rows, fold_last=True)


@backups.command("verify")
def verify(
    backup_id: Annotated[str, typer.Argument(help="The backup's id.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the drill until it ends; the exit code tells.")
    ] = False,
) -> None:
    """Verify a backup: re-hash it, restore it into a scratch database, compare row counts
    and run the smoke queries (POST /v1/backups/{id}/verify). With --wait, exits 0 when
    the drill passed, 1 when it failed or was refused."""
    with connect() as client:
        headers = {"Idempotency-Key": f"verify-{uuid.uuid4()}"}
        try:
            response = client.request(
                "POST", f"{_path(backup_id)}/verify", headers=headers, retries=5
            )
        except ApiError as exc:
            if exc.status == 409:
                raise _refused("Not verified", exc) from None
            raise
        run = response.json()
        console.print(
            f"Drill of backup {escape(backup_id)} queued: run [bold]{escape(run['id'])}[/bold]"
        )
        if not wait:
            raise typer.Exit(EXIT_SUCCEEDED)
        code = follow(client, run)
        final = client.get_json(_path(backup_id))
        _summary(final)
        if final.get("restore_seconds") is not None and code == EXIT_SUCCEEDED:
            console.print(f"  Restored in {final['restore_seconds']:.2f} s")
    raise typer.Exit(code)


@backups.command("delete")
def delete(backup_id: Annotated[str, typer.Argument(help="The backup's id.")]) -> None:
    """Delete a backup's stored object (admins; the newest verified backup of a database
    is kept). The backup stays listed as deleted."""
    with connect() as client:
        try:
            found = client.request("DELETE", _path(backup_id), retries=2).json()
        except ApiError as exc:
            if exc.status == 409:
                raise _refused("Not deleted", exc) from None
            raise
    console.print(
        f"Backup [bold]{escape(str(found['id']))}[/bold]: "
        f"{styled(str(found['status']), BACKUP_STYLES)}"
    )
