"""``formula-ops deploy`` (what CI runs) and ``formula-ops apply -f`` (environments as a
file), both through the API (``FORMULA_OPS_URL``, ``FORMULA_OPS_TOKEN``).

``deploy`` exits 0 when the deployment succeeded, 1 when it did not (failure, rolled
back, error, cancelled, or refused: pinned version, unknown service) and 2 when that
could not be found out (bad usage, server unreachable, token refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import uuid
from collections.abc import Mapping
from pathlib import Path
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
    note,
    styled,
)
from app.cli.runs import follow, print_plan

DEPLOYMENTS = "/v1/deployments"
# CI systems' ids of a pipeline run: the same when a job of that run is retried.
CI_RUN_VARIABLES = (
    "GITHUB_RUN_ID",
    "CI_PIPELINE_ID",
    "BUILDKITE_BUILD_ID",
    "CIRCLE_WORKFLOW_ID",
    "BUILD_TAG",
)


def idempotency_key(body: dict[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """Derived from the inputs and the CI pipeline run: a retried job of the same run
    sends the same key and gets the deployment its first attempt created. Outside CI
    (no pipeline id) each invocation has its own key; its own retries of a dropped
    request still share it."""
    env = os.environ if environ is None else environ
    ci_run = {name: env[name] for name in CI_RUN_VARIABLES if env.get(name)}
    material = {
        "body": {k: v for k, v in body.items() if k != "dry_run"},
        "ci_run": ci_run or {"invocation": uuid.uuid4().hex},
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return f"deploy-{digest[:40]}"


def deploy(
    environment: Annotated[str, typer.Option("--env", "-e", help="Environment name.")],
    service: Annotated[str, typer.Option("--service", "-s", help="Service name.")],
    version: Annotated[str, typer.Option("--version", "-v", help="Version to deploy.")],
    ref: Annotated[str | None, typer.Option(help="Commit SHA, tag or branch.")] = None,
    description: Annotated[str, typer.Option(help="Why (shown in the evidence).")] = "",
    checklist: Annotated[
        str,
        typer.Option(
            help="Confirmed checklist items, comma-separated: code_review, tests_passed, "
            "security_scan, performance_tests, rollback_plan, stakeholders_notified."
        ),
    ] = "",
    backup: Annotated[
        bool, typer.Option("--backup/--no-backup", help="Back up the database first.")
    ] = True,
    auto_rollback: Annotated[
        bool,
        typer.Option("--auto-rollback/--no-auto-rollback", help="Roll back when a step fails."),
    ] = True,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until it ends; the exit code tells how.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Default: derived from the inputs and the CI pipeline run id.",
        ),
    ] = None,
) -> None:
    """Deploy a version of a service (POST /v1/deployments).

    Prints the deployment's URL; with --wait follows its progress and exits 0 on success,
    1 on failure or rollback, 2 when the outcome could not be found out."""
    items = [i.strip() for i in checklist.split(",") if i.strip()]
    body: dict[str, Any] = {
        "environment": environment,
        "service": service,
        "version": version,
        "checklist": items,
        "backup": backup,
        "auto_rollback": auto_rollback,
    }
    if ref:
        body["ref"] = ref
    if description:
        body["description"] = description
    with connect() as client:
        if dry_run:
            plan = client.request("POST", DEPLOYMENTS, json={**body, "dry_run": True}, retries=2)
            data = plan.json()
            missing = data.get("checklist_missing") or []
            print_plan({**data, "kind": "deployment"})
            if missing:
                console.print(f"[yellow]Checklist items missing:[/yellow] {', '.join(missing)}")
            return
        headers = {"Idempotency-Key": key or idempotency_key(body)}
        try:
            response = client.request("POST", DEPLOYMENTS, json=body, headers=headers, retries=5)
        except ApiError as exc:
            if exc.status in (409, 404, 422):  # refused: pinned, unknown… — it did not deploy
                error(f"Not deployed: {exc.message}")
                if exc.type.endswith("/version-pinned"):
                    unpin = ["formula-ops", "unpin", "--env", environment, "--service", service]
                    command = shlex.join([*unpin, "--version", version])
                    note(f"An operator allows it again with: {command}")
                raise typer.Exit(EXIT_NOT_SUCCEEDED) from None
            raise
        deployment = response.json()
        replayed = bool(response.headers.get("Idempotent-Replayed"))
        code = show_and_follow(client, deployment, wait, replayed)
    raise typer.Exit(code)


def show_and_follow(
    client: Client, deployment: dict[str, Any], wait: bool, replayed: bool = False
) -> int:
    """Print a deployment just requested (id, what, status, URL); with ``wait``, follow
    it to its end and print its summary. The exit code."""
    path = f"{DEPLOYMENTS}/{quote(str(deployment['id']), safe='')}"
    if replayed:  # the stored answer says how it was then; say how it is now
        deployment = client.get_json(path)
    services = ", ".join(f"{s['name']} {s['version']}" for s in deployment.get("services", []))
    again = " (already requested: same inputs)" if replayed else ""
    console.print(
        f"{_noun(deployment)} [bold]{escape(str(deployment['id']))}[/bold]{again}: "
        f"{escape(services)} to {escape(str(deployment.get('environment', '')))}, "
        f"{styled(str(deployment['status']), STATUS_STYLES)}"
        + (
            f", queue position {deployment['queue_position']}"
            if deployment.get("queue_position")
            else ""
        )
    )
    console.print(f"URL: {escape(client.url(path))}")
    if not wait:
        return EXIT_SUCCEEDED
    code = follow(client, {**deployment, "kind": deployment.get("kind", "deployment")})
    final = client.get_json(path)
    _summary(client, final)
    return EXIT_SUCCEEDED if final["status"] == "success" and code == 0 else EXIT_NOT_SUCCEEDED


def _noun(deployment: dict[str, Any]) -> str:
    """What the deployment is to its reader: a rollback or a deployment."""
    return "Rollback" if deployment.get("kind") == "rollback" else "Deployment"


def _summary(client: Client, deployment: dict[str, Any]) -> None:
    """Status and evidence; the reason of a failure was said with the run's outcome."""
    status = str(deployment["status"])
    services = ", ".join(f"{s['name']} {s['version']}" for s in deployment.get("services", []))
    console.print(f"{_noun(deployment)} {escape(services)}: {styled(status, STATUS_STYLES)}")
    console.print(f"  Evidence: {escape(client.url(deployment['links']['evidence']))}")


# -- apply -----------------------------------------------------------------------------


def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="environments.yaml (or .json).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the differences; change nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune", help="Delete services of the listed environments that the file omits."
        ),
    ] = False,
) -> None:
    """Make the server's environments and services match a declarative file, through the
    API: prints each difference (+ create, ~ change, - delete), then applies it (each
    write guarded by If-Match, so a concurrent change is refused, not overwritten)."""
    from app.cli.declarative import apply_file

    apply_file(file, dry_run=dry_run, prune=prune)
