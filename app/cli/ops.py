"""Commands on what already exists, through the API (``FORMULA_OPS_URL``,
``FORMULA_OPS_TOKEN``): ``rollback``, ``cancel``, ``unpin`` and ``audit list``.

Exit codes as the other commands: 0 done (with ``--wait``: the rollback succeeded), 1 not
done (refused: a finished run, a pinned version; or the rollback failed), 2 bad input or
an answer that could not be had (usage, unknown id, server unreachable, token refused).
"""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote

import typer
from rich.markup import escape

from app.audit.vocabulary import Outcome
from app.cli.client import ApiError, collect, connect
from app.cli.deploy import DEPLOYMENTS, idempotency_key, show_and_follow
from app.cli.output import (
    EXIT_NOT_SUCCEEDED,
    STATUS_STYLES,
    console,
    error,
    print_table,
    styled,
    utc,
)
from app.runs.vocabulary import RunKind, RunStatus

DEPLOYMENT_KINDS = (RunKind.DEPLOYMENT.value, RunKind.ROLLBACK.value)
AUDIT_COLUMNS = ("seq", "created", "actor", "actor name", "action", "resource", "outcome")


def _refused(what: str, exc: ApiError) -> typer.Exit:
    error(f"{what}: {exc.message}")
    return typer.Exit(EXIT_NOT_SUCCEEDED)


# -- rollback ---------------------------------------------------------------------------


def rollback(
    deployment_id: Annotated[str, typer.Argument(help="The deployment to roll back.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until it ends; the exit code tells how.")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Default: derived from the deployment and the CI pipeline run id.",
        ),
    ] = None,
) -> None:
    """Roll a deployment back (POST /v1/deployments/{id}/rollback).

    Deploys again the versions that ran before it, and pins the rolled-back ones.
    Prints the rollback's URL; with --wait follows it and exits 0 when it succeeded, 1
    when it did not or was refused (nothing to roll back, a pinned version), 2 when that
    could not be found out."""
    path = f"{DEPLOYMENTS}/{quote(deployment_id, safe='')}/rollback"
    headers = {"Idempotency-Key": key or idempotency_key({"rollback_of": deployment_id})}
    with connect() as client:
        try:
            response = client.request("POST", path, headers=headers, retries=5)
        except ApiError as exc:
            if exc.status == 409:
                raise _refused("Not rolled back", exc) from None
            raise
        replayed = bool(response.headers.get("Idempotent-Replayed"))
        code = show_and_follow(client, response.json(), wait, replayed)
    raise typer.Exit(code)


# -- cancel ------------------------------------------------------------------------------


def cancel(
    run_id: Annotated[str, typer.Argument(help="A run's or a deployment's id.")],
) -> None:
    """Cancel a run or a deployment.

    A queued one ends at once, a running one after its current step (a deployment then
    rolls back what it changed).
    Exit 0 when it is cancelled or will be, 1 when it had already finished."""
    with connect() as client:
        run = client.get_json(f"/v1/runs/{quote(run_id, safe='')}")
        is_deployment = run["kind"] in DEPLOYMENT_KINDS
        # A deployment is cancelled where its deployer may do it; other runs by operators.
        base = DEPLOYMENTS if is_deployment else "/v1/runs"
        try:
            answer = client.request("POST", f"{base}/{quote(run['id'], safe='')}/cancel").json()
        except ApiError as exc:
            if exc.status == 409:
                raise _refused("Not cancelled", exc) from None
            raise
    what = str(run["kind"]).replace("_", " ").capitalize()
    name = f"{what} [bold]{escape(str(run['id']))}[/bold]"
    status = str(answer["status"])
    if status == RunStatus.CANCELLED:
        console.print(f"{name}: {styled(status, STATUS_STYLES)}.")
        return
    then = " and rolls back what it changed" if is_deployment else ""
    console.print(
        f"{name}: cancel requested; it stops after its current step{then} "
        f"(now {styled(status, STATUS_STYLES)})."
    )


# -- unpin -------------------------------------------------------------------------------


def unpin(
    environment: Annotated[str, typer.Option("--env", "-e", help="Environment name.")],
    service: Annotated[str, typer.Option("--service", "-s", help="Service name.")],
    version: Annotated[str, typer.Option("--version", "-v", help="The pinned version.")],
) -> None:
    """Unpin a version a rollback pinned, so it may be deployed again.

    DELETE /v1/environments/{env}/services/{service}/pins/{version}."""
    path = (
        f"/v1/environments/{quote(environment, safe='')}/services/"
        f"{quote(service, safe='')}/pins/{quote(version, safe='')}"
    )
    with connect() as client:
        client.request("DELETE", path)
    console.print(
        f"Unpinned {escape(service)} {escape(version)} in {escape(environment)}: "
        "it may be deployed again."
    )


# -- audit list --------------------------------------------------------------------------


def audit_list(
    actor: Annotated[str | None, typer.Option(help="Only events of this token id.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. deployment.create.")
    ] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="Only this outcome.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time on (RFC 3339, inclusive).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this time (RFC 3339, exclusive).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many events.")] = 50,
) -> None:
    """List the audit trail through the API (GET /v1/audit-events), newest first.

    One tab-separated line per event when the output is not a terminal."""
    with connect() as client:
        found = collect(
            client,
            "/v1/audit-events",
            limit,
            actor=actor,
            action=action,
            outcome=outcome.value if outcome else None,
            since=since,
            until=until,
        )
    columns = (*AUDIT_COLUMNS, "summary")
    rows = [
        (
            str(event["seq"]),
            utc(event.get("created_at")),
            event.get("actor_token_id") or "-",
            event.get("actor_name") or "-",
            str(event["action"]),
            "/".join(
                str(part) for part in (event.get("resource_type"), event.get("resource_id")) if part
            )
            or "-",
            str(event["outcome"]),
            json.dumps(event.get("summary") or {}, separators=(",", ":"), sort_keys=True),
        )
        for event in found
    ]
    print_table(columns, rows, empty="No audit events.", fold_last=True)
