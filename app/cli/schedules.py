"""``schedules list|show``: the cron schedules that start runbooks, through the API
(``FORMULA_OPS_URL``, ``FORMULA_OPS_TOKEN``)."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer

from app.cli.client import collect, connect
from app.cli.output import print_table, utc

schedules = typer.Typer(
    help="Cron schedules of runbooks, through the API (FORMULA_OPS_URL, FORMULA_OPS_TOKEN).",
    no_args_is_help=True,
)
SCHEDULES = "/v1/schedules"
SLOT_STYLES = {"fired": "green", "missed": "yellow", "failed": "red"}


def _path(schedule_id: str) -> str:
    return f"{SCHEDULES}/{quote(schedule_id, safe='')}"


def _when(schedule: dict[str, Any]) -> str:
    return f"{schedule['cron']} ({schedule['timezone']})"


@schedules.command("list")
def list_schedules(
    runbook: Annotated[str | None, typer.Option(help="Only this runbook's schedules.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
) -> None:
    """The newest schedules first: runbook, when, whether enabled, the next slot and how
    the last one went."""
    with connect() as client:
        found = collect(client, SCHEDULES, limit, runbook=runbook)
    columns = ("id", "name", "runbook", "cron", "enabled", "next run", "last slot", "origin")
    rows = []
    for schedule in found:
        recent = schedule.get("recent_slots") or []
        last = f"{utc(recent[0]['slot_at'])} {recent[0]['status']}" if recent else "-"
        rows.append(
            (
                str(schedule["id"]),
                str(schedule["name"]),
                str(schedule["runbook"]),
                _when(schedule),
                "yes" if schedule["enabled"] else "no",
                utc(schedule.get("next_run_at")) if schedule.get("next_run_at") else "-",
                last,
                str(schedule["origin"]),
            )
        )
    print_table(columns, rows, empty="No schedules.", no_wrap_first=True)


@schedules.command("show")
def show(
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id.")],
    slots: Annotated[int, typer.Option(min=0, max=1000, help="How many recent slots.")] = 10,
) -> None:
    """One schedule, then its latest slots (fired with their run, missed, failed with why)."""
    with connect() as client:
        found = client.get_json(_path(schedule_id))
        recent = collect(client, f"{_path(schedule_id)}/slots", slots) if slots else []
    values = {
        **found,
        "cron": _when(found),
        "enabled": "yes" if found["enabled"] else "no",
        "parameters": json.dumps(found.get("parameters") or {}, sort_keys=True),
        "next_run_at": utc(found["next_run_at"]) if found.get("next_run_at") else None,
        "last_slot_at": utc(found["last_slot_at"]) if found.get("last_slot_at") else None,
        "created_at": utc(found.get("created_at")),
        "updated_at": utc(found.get("updated_at")),
    }
    fields = (
        "id",
        "name",
        "runbook",
        "parameters",
        "cron",
        "enabled",
        "origin",
        "next_run_at",
        "last_slot_at",
        "last_run_id",
        "created_by",
        "created_at",
        "updated_at",
    )
    rows = [(name, "-" if values.get(name) is None else str(values[name])) for name in fields]
    print_table(("field", "value"), rows, fold_last=True)
    if slots:
        print()
        print_table(
            ("slot", "status", "run", "detail"),
            [
                (
                    utc(slot["slot_at"]),
                    str(slot["status"]),
                    slot.get("run_id") or "-",
                    slot.get("detail") or "",
                )
                for slot in recent
            ],
            empty="No slots yet.",
            styles={1: SLOT_STYLES},
            fold_last=True,
        )
