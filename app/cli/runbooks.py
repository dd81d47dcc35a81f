"""Commands of the runbook catalog, through the API: ``runbooks list|show`` and
``run <runbook> --param k=v [--wait]``.

``run`` reads the runbook's parameter schema first, so ``--param count=3`` is sent as
the integer 3 and ``--param force=true`` as a boolean; with ``--wait`` it follows the
run and exits 0 when it succeeded, 1 when it did not, 2 when that could not be found
out (as ``runs watch``).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape

from app.cli.client import collect, connect
from app.cli.output import console, fail, print_table
from app.cli.runs import follow, print_plan

runbooks = typer.Typer(
    help="The runbook catalog, through the API (FORMULA_OPS_URL, FORMULA_OPS_TOKEN).",
    no_args_is_help=True,
)
RUNBOOKS = "/v1/runbooks"


def _path(name: str) -> str:
    return f"{RUNBOOKS}/{quote(name, safe='')}"


@runbooks.command("list")
def list_runbooks(
    kind: Annotated[
        str | None, typer.Option(help="Only `maintenance` or only `playbook` runbooks.")
    ] = None,
) -> None:
    """Every runbook: name, kind, the role it needs, its default schedule, its title."""
    with connect() as client:
        found = collect(client, RUNBOOKS, 1000, kind=kind)
    rows = [
        (
            str(r["name"]),
            str(r["kind"]),
            str(r["role"]),
            (r.get("schedule") or {}).get("cron", "-"),
            str(r["title"]),
        )
        for r in found
    ]
    print_table(
        ("name", "kind", "role", "schedule", "title"), rows, empty="No runbooks.", fold_last=True
    )


@runbooks.command("show")
def show(name: Annotated[str, typer.Argument(help="The runbook's name.")]) -> None:
    """A runbook's description, parameters and steps."""
    with connect() as client:
        runbook = client.get_json(_path(name))
    console.print(f"[bold]{escape(runbook['name'])}[/bold]: {escape(runbook['title'])}")
    console.print(
        f"{runbook['kind']}, needs the {runbook['role']} role"
        + (", writes" if runbook.get("writes") else "")
    )
    if runbook.get("description"):
        console.print(escape(runbook["description"].strip()))
    schema = runbook["parameters"]
    required = set(schema.get("required", []))
    rows = [
        (
            name,
            str(prop.get("type")),
            "yes" if name in required else "-",
            json.dumps(prop["default"]) if "default" in prop else "-",
            str(prop.get("description", "")),
        )
        for name, prop in schema.get("properties", {}).items()
    ]
    print_table(
        ("parameter", "type", "required", "default", "description"),
        rows,
        empty="No parameters.",
        fold_last=True,
    )
    steps = [
        (str(n), s["name"], s["action"], s["on_failure"]) for n, s in enumerate(runbook["steps"])
    ]
    print_table(("step", "name", "action", "on failure"), steps, fold_last=False)


def _typed(schema: dict[str, Any], name: str, text: str) -> Any:
    """``text`` as the type the runbook declares for ``name`` (the server checks it)."""
    kind = schema.get("properties", {}).get(name, {}).get("type")
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            fail(f"--param {name}: {text!r} is not an integer")
    if kind == "boolean":
        lowered = text.lower()
        if lowered not in ("true", "false"):
            fail(f"--param {name}: give true or false")
        return lowered == "true"
    return text


def parse_params(schema: dict[str, Any], given: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in given:
        name, sep, text = item.partition("=")
        if not sep or not name:
            fail(f"--param {item!r}: write it as name=value")
        if name in values:
            fail(f"--param {name} is given twice")
        values[name] = _typed(schema, name, text)
    return values


def run(
    name: Annotated[str, typer.Argument(help="The runbook's name (`formula-ops runbooks list`).")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A parameter as name=value; repeat for each."),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Follow the run until it finishes; exit like `runs watch`."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; queue and run nothing.")
    ] = False,
) -> None:
    """Run a runbook (POST /v1/runbooks/{name}/runs).

    Prints the run's id and Location; with --wait, follows it and exits 0 if it
    succeeded, 1 if it did not, 2 if that could not be found out."""
    with connect() as client:
        schema = client.get_json(_path(name))["parameters"]
        body: dict[str, Any] = {"parameters": parse_params(schema, param or [])}
        if dry_run:
            plan = client.request(
                "POST", f"{_path(name)}/runs", json={**body, "dry_run": True}, retries=2
            )
            print_plan(plan.json())
            return
        response = client.request(
            "POST",
            f"{_path(name)}/runs",
            json=body,
            headers={"Idempotency-Key": str(uuid.uuid4())},
            retries=3,
        )
        started = response.json()
        location = client.url(response.headers.get("Location") or started["links"]["self"])
        if not wait:
            console.print(f"Runbook {escape(name)} queued: [bold]{escape(started['id'])}[/bold]")
            console.print(f"Location: {escape(location)}")
            return
        code = follow(client, started)
        summary = client.get_json(f"/v1/runs/{quote(started['id'], safe='')}").get("result") or {}
        if summary.get("summary"):
            console.print(escape(str(summary["summary"])))
    raise typer.Exit(code)
