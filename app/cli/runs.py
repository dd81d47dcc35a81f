"""Commands that work through the API of a running server: ``runs list|watch`` and
``health-check``. ``FORMULA_OPS_URL`` says where it is (default: this host's server,
``FORMULA_OPS_HOST``/``FORMULA_OPS_PORT``, http://127.0.0.1:8000), ``FORMULA_OPS_TOKEN``
as whom to ask.

The commands that follow a run exit 0 when it succeeded, 1 when it did not (failure,
error, cancelled, rolled back) and 2 when that could not be found out: bad usage, the
server unreachable, a refused token (401/403), an unknown run (404) or another error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperOption

from app.cli.client import Client, ServerSentEvent, collect, connect
from app.cli.output import (
    EXIT_NOT_SUCCEEDED,
    EXIT_SUCCEEDED,
    EXIT_UNKNOWN,
    LEVEL_STYLES,
    STATUS_STYLES,
    console,
    duration,
    note,
    parse_time,
    print_table,
    styled,
    utc,
)
from app.deployments.problems import TITLES as DEPLOYMENT_TITLES
from app.runs.vocabulary import FAILURE_TITLES, TERMINAL_STATUSES, RunStatus

runs = typer.Typer(
    help="Runs of every kind, through the API (FORMULA_OPS_URL, FORMULA_OPS_TOKEN).",
    no_args_is_help=True,
)
HEALTH_CHECKS = "/v1/health-checks"


# -- runs list -------------------------------------------------------------------------


@functools.cache
def run_kinds() -> list[str]:
    """The kinds that exist here (a domain registered them), not every reserved name.
    Found when asked for (``--kind`` given, or ``runs list --help``): it takes every
    domain's registration, which the other commands do without."""
    from app.bootstrap import build_registry
    from app.runs import kinds

    return [kind.value for kind in kinds.registered(build_registry())]


KIND_HELP = "Only runs of this kind: {kinds}."


def _known_kind(value: str | None) -> str | None:
    if value is not None and value not in run_kinds():
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(run_kinds())}.")
    return value


class _ListCommand(TyperCommand):
    """``runs list``, whose ``--kind`` help names the kinds when the help is shown."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            if param.name == "kind" and isinstance(param, TyperOption):
                param.help = KIND_HELP.format(kinds=", ".join(run_kinds()))
        super().format_help(ctx, formatter)


@runs.command("list", cls=_ListCommand)
def list_runs(
    kind: Annotated[
        str | None,
        typer.Option(help=KIND_HELP.format(kinds="..."), callback=_known_kind),
    ] = None,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status.")] = None,
    environment: Annotated[str | None, typer.Option(help="Only runs in this environment.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many runs.")] = 20,
) -> None:
    """The newest runs first, with kind, status, environment and duration."""
    with connect() as client:
        found = collect(
            client,
            "/v1/runs",
            limit,
            kind=kind,
            status=status.value if status else None,
            environment=environment,
        )

    columns = ("id", "kind", "status", "environment", "requested by", "created", "duration")
    rows = [
        (
            str(run["id"]),
            str(run["kind"]),
            str(run["status"]),
            run.get("environment") or "-",
            run.get("requested_by") or "-",
            utc(run.get("created_at")),
            duration(parse_time(run.get("started_at")), parse_time(run.get("finished_at"))),
        )
        for run in found
    ]
    print_table(columns, rows, empty="No runs.", styles={2: STATUS_STYLES}, no_wrap_first=True)


# -- runs watch ------------------------------------------------------------------------


@runs.command("watch")
def watch(run_id: Annotated[str, typer.Argument(help="The run's id.")]) -> None:
    """Follow a run until it finishes (a finished run's progress is replayed).

    Exit code 0 if it succeeded, 1 if it did not, 2 if that could not be found out."""
    with connect() as client:
        run = client.get_json(f"/v1/runs/{quote(run_id, safe='')}")
        code = follow(client, run)
    raise typer.Exit(code)


class _Progress:
    """Prints a run's events as they come: steps with status, level and duration, log
    lines, and what happened to the run; between events, a heartbeat line."""

    def __init__(self, run: dict[str, Any], activity: Callable[[str], None]) -> None:
        self.run = run
        self.activity = activity
        self.step_started: dict[Any, dt.datetime] = {}
        self.run_started = parse_time(run.get("started_at"))
        self.finished: dict[str, Any] | None = None
        self.finished_at: dt.datetime | None = None
        self.current = "waiting for the run to start"
        self.current_since: dt.datetime | None = None
        self.failed_steps: list[tuple[str, str]] = []  # (step, its error), said at the end
        self.printed_at = time.monotonic()

    def line(self, at: dt.datetime | None, text: str) -> None:
        when = at.astimezone().strftime("%H:%M:%S") if at else " " * 8
        console.print(f"[dim]{when}[/dim] {text}")
        self.printed_at = time.monotonic()

    def _now_doing(self, what: str, since: dt.datetime | None) -> None:
        self.current, self.current_since = what, since
        self.activity(what)

    def heartbeat(self) -> None:
        """One line: what the run is doing and for how long (where no spinner shows it)."""
        now = dt.datetime.now(dt.UTC)
        text = self.current
        if self.current_since is not None:
            text += f" for {duration(self.current_since, now)}"
        if self.run_started is not None:
            text += f" ({duration(self.run_started, now)} since the run started)"
        self.line(now, f"[dim]... {escape(text)}[/dim]")

    def show(self, event: ServerSentEvent) -> None:
        try:
            payload = event.json()
        except ValueError:
            payload = None
        data: dict[str, Any] = payload if isinstance(payload, dict) else {}
        at = parse_time(data.get("at"))
        label = f"[{data.get('position', '?')}] {data.get('name', '')}"
        step = escape(label)
        match event.event:
            case "run.queued":
                self.line(at, "queued")
                self._now_doing("queued", at)
            case "run.started":
                self.run_started = at or self.run_started
                self.line(at, f"started (attempt {escape(str(data.get('attempt', '?')))})")
                self._now_doing("waiting for the first step", at)
            case "step.started":
                if at is not None:
                    self.step_started[data.get("position")] = at
                attempts = data.get("attempts")
                again = ""
                if isinstance(attempts, int) and attempts > 1:
                    again = f", attempt {attempts}"
                action = escape(str(data.get("action", "")))
                self.line(at, f"{step} [dim]({action}{again})[/dim] started")
                self._now_doing(f"{label} running", at)
            case "step.finished":
                self._step_finished(at, label, data)
                self._now_doing("waiting for the next step", at)
            case "log":
                text = escape(str(data.get("line", "")).rstrip())
                self.line(at, f"    [dim]{escape(str(data.get('position', '?')))} |[/dim] {text}")
            case "step.retrying":
                reason = escape(str(data.get("reason", "")))
                self.line(at, f"{step} [yellow]will run again[/yellow] ({reason})")
            case "run.cancel_requested":
                by = escape(str(data.get("by", "someone")))
                self.line(at, f"[yellow]cancel requested[/yellow] by {by}")
            case "run.requeued":
                reason = escape(str(data.get("reason", "")))
                self.line(at, f"[yellow]requeued[/yellow] ({reason})")
                self._now_doing("requeued", at)
            case "run.finished":
                self.finished = data
                self.finished_at = at
            case _:
                self.line(at, escape(event.event))

    def _step_finished(self, at: dt.datetime | None, label: str, data: dict[str, Any]) -> None:
        status = styled(data.get("status"), STATUS_STYLES)
        level = styled(data.get("level"), LEVEL_STYLES)
        took = duration(self.step_started.pop(data.get("position"), None), at)
        note = str(data.get("error") or data.get("output") or "").strip()
        if data.get("status") == "failure" and note:
            # The reason is said once, with the run's outcome at the end.
            self.failed_steps.append((label, note))
            note = ""
        first = note.splitlines()[0] if note else ""
        if len(first) > 160:
            first = first[:157] + "..."
        tail = f"  [dim]{escape(first)}[/dim]" if first else ""
        self.line(at, f"{escape(label)}  {status}  {level}  {took}{tail}")

    def outcome(self) -> int:
        """Print the final line (with the reason of a failure, once); the exit code."""
        run_id = escape(str(self.run.get("id", "")))
        data = self.finished or {}
        status = str(data.get("status", ""))
        took = duration(self.run_started, self.finished_at)
        if status == RunStatus.SUCCESS:
            console.print(f"[green]Run {run_id} succeeded[/green] in {took}.")
            return EXIT_SUCCEEDED
        failure_type = data.get("failure_type")
        title = (
            DEPLOYMENT_TITLES.get(str(failure_type))
            or FAILURE_TITLES.get(str(failure_type))
            or "Run did not succeed"
        )
        detail = data.get("failure_detail")
        reason = " ".join((f"{title}: {detail}" if detail else title).split())
        console.print(
            f"[red]Run {run_id} {escape(status or 'ended')}[/red] after {took}: {escape(reason)}"
        )
        for label, error in self.failed_steps:
            if " ".join(error.split()) not in reason:  # a step's error the reason omits
                console.print(f"  {escape(label)}: {escape(' '.join(error.split()))}")
        return EXIT_NOT_SUCCEEDED if status in TERMINAL_STATUSES else EXIT_UNKNOWN


# Without a terminal (CI logs), a line at least this often while a run is followed.
HEARTBEAT_SECONDS = 5.0
_STREAM_END = object()


def _read_events(client: Client, path: str, into: queue.Queue[Any]) -> None:
    """Put the events of ``path`` into ``into`` until ``run.finished``; then the end
    marker, or the exception that stopped the stream."""
    try:
        with contextlib.closing(client.events(path)) as events:
            for event in events:
                into.put(event)
                if event.event == "run.finished":
                    break
    except BaseException as exc:  # handed to the thread that follows, which raises it
        into.put(exc)
        return
    into.put(_STREAM_END)


def follow(client: Client, run: dict[str, Any]) -> int:
    """Print the progress of ``run`` from its event stream until it finishes; the exit
    code of its outcome. Without a terminal, a heartbeat line (current step, elapsed)
    comes whenever nothing was printed for ``HEARTBEAT_SECONDS``."""
    run_id = str(run["id"])
    environment = f", {run['environment']}" if run.get("environment") else ""
    requested = f" requested by {run['requested_by']}" if run.get("requested_by") else ""
    console.print(
        f"Run [bold]{escape(run_id)}[/bold] ({escape(str(run['kind']) + environment)})"
        f"{escape(requested)}: {styled(str(run['status']), STATUS_STYLES)}"
    )
    spinner = console.status("waiting for the run") if console.is_terminal else None
    progress = _Progress(run, spinner.update if spinner is not None else lambda _: None)
    events = run.get("links", {}).get("events") or f"/v1/runs/{quote(run_id, safe='')}/events"
    received: queue.Queue[Any] = queue.Queue()
    reader = threading.Thread(
        target=_read_events, args=(client, events, received), name="events", daemon=True
    )
    try:
        with spinner if spinner is not None else nullcontext():
            reader.start()
            while True:
                wait = progress.printed_at + HEARTBEAT_SECONDS - time.monotonic()
                try:
                    item = received.get(timeout=max(wait, 0.05))
                except queue.Empty:
                    if spinner is None:
                        progress.heartbeat()
                    continue
                if isinstance(item, BaseException):
                    raise item
                if item is _STREAM_END:
                    break
                progress.show(item)
                if item.event == "run.finished":
                    break
        reader.join()
    except KeyboardInterrupt:
        note(
            "Stopped following; the run goes on. Follow it again with "
            f"`formula-ops runs watch {run_id}`."
        )
        raise typer.Exit(130) from None
    return progress.outcome()


# -- health-check ----------------------------------------------------------------------


def health_check(
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Follow the run until it finishes; exit like `runs watch`."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; queue and run nothing.")
    ] = False,
) -> None:
    """Run the daily health check now (POST /v1/health-checks).

    Prints the run's id and Location; with --wait, follows it and exits 0 if it
    succeeded, 1 if it did not, 2 if that could not be found out."""
    with connect() as client:
        if dry_run:
            # Nothing is created: the request is safe to repeat without a key.
            plan = client.request("POST", HEALTH_CHECKS, json={"dry_run": True}, retries=2)
            print_plan(plan.json())
            return
        response = client.request(
            "POST", HEALTH_CHECKS, headers={"Idempotency-Key": str(uuid.uuid4())}, retries=3
        )
        run = response.json()
        location = client.url(response.headers.get("Location") or run["links"]["self"])
        if not wait:
            console.print(f"Health check queued: [bold]{escape(str(run['id']))}[/bold]")
            console.print(f"Location: {escape(location)}")
            return
        code = follow(client, run)
    raise typer.Exit(code)


def print_plan(plan: dict[str, Any]) -> None:
    steps: list[dict[str, Any]] = plan.get("steps", [])
    columns = ("position", "name", "action", "timeout", "params")
    rows = [
        (
            str(step["position"]),
            str(step["name"]),
            str(step["action"]),
            f"{step['timeout_seconds']:g} s",
            json.dumps(step.get("params") or {}, separators=(",", ":"), sort_keys=True),
        )
        for step in steps
    ]
    console.print(
        f"Dry run: the {escape(str(plan.get('kind', 'run')).replace('_', ' '))} would run "
        f"{len(rows)} steps; nothing was queued or executed."
    )
    print_table(columns, rows, fold_last=True)
