"""Every benchmark, sized to finish in under 10 minutes on 2 cores, and one report.

Runs each script of :data:`SCRIPTS` (in its own process, with ``--json``; the repository
first on ``PYTHONPATH``, so its subprocesses run this checkout's code), then writes
``bench/results/latest.md``: the machine (cores, RAM, CPU model, OS, load average at start
and end), the versions (Python, PostgreSQL, Redis, key packages, git commit) and one
table: figure | value | baseline (same run) | ratio | goal | met?. Each script's own
output goes to ``bench/results/raw/<script>.txt`` (not committed). A script that fails
is reported in the file (its exit status and the end of its output) and the others still
run. Nothing is asserted: the figures are for comparison within one run.

    .venv/bin/python bench/run_all.py [--only scaling idle_rss] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
RESULTS = HERE / "results"
PG_ADMIN_URL = os.environ.get(
    "FORMULA_OPS_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# (script, its arguments for this run, its time limit in s). The sizes keep the whole run
# under 10 minutes on 2 shared cores; each script's defaults are larger.
SCRIPTS: list[tuple[str, list[str], float]] = [
    (
        "deployment_create",
        ["--clients", "16", "--seconds", "3", "--warmup", "1", "--latency-seconds", "3"],
        180,
    ),
    (
        "run_latency",
        [
            *("--runs", "100", "--rate", "50", "--poll-delays", "0.5"),
            *("--processes", "1", "2", "--idle-seconds", "3"),
        ],
        240,
    ),
    ("audit_list", ["--rows", "200000", "--runs", "5"], 180),
    ("bench_webhooks", ["--events", "1500", "--seconds", "3"], 180),
    ("bench_status", ["--seconds", "2", "--warmup", "1", "--rounds", "2"], 120),
    ("bench_alerts", [], 180),
    ("backup_stream", ["--size-mb", "100"], 180),
    ("runbook_start", ["--requests", "100", "--loads", "5"], 120),
    ("scaling", ["--checks", "60", "--clients", "8", "--configs", "1:1", "2:1", "1:3"], 360),
    ("idle_rss", ["--idle-seconds", "5"], 240),
]
PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "aiosqlite",
    "arq",
    "redis",
    "httpx",
    "aiohttp",
)


def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    mem_kb = next(
        (int(line.split()[1]) for line in read("/proc/meminfo").splitlines() if "MemTotal" in line),
        0,
    )
    os_name = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        platform.system(),
    )
    return {
        "cores": f"{os.cpu_count()} (available to this process: {len(os.sched_getaffinity(0))})",
        "RAM": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "CPU": cpu,
        "OS": f"{os_name}, Linux {platform.release()}",
    }


def command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(  # noqa: S603 - fixed argv
            argv, capture_output=True, text=True, timeout=10, check=True, cwd=REPO_ROOT
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def versions() -> dict[str, str]:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        postgres = str(row[0]) if row else "?"
    except psycopg.Error as exc:
        postgres = f"unavailable ({exc})"
    redis = command_output([shutil.which("redis-server") or "redis-server", "--version"])
    packages = []
    for name in PACKAGES:
        try:
            packages.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    commit = command_output(["git", "rev-parse", "--short=12", "HEAD"])
    dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "PostgreSQL": postgres,
        "Redis": redis.replace("Redis server ", ""),
        "packages": ", ".join(packages),
        "git commit": f"{commit}{' (with uncommitted changes)' if dirty else ''}",
    }


def run_script(
    name: str, arguments: list[str], limit: float, raw: Path, directory: Path
) -> dict[str, Any]:
    """One script with ``--json``; its figures, wall time and, on failure, why."""
    out = directory / f"{name}.json"
    argv = [sys.executable, str(HERE / f"{name}.py"), *arguments, "--json", str(out)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    print(f"== {name} {' '.join(arguments)}", file=sys.stderr, flush=True)
    log = raw / f"{name}.txt"
    with log.open("w") as output:
        output.write(f"$ {' '.join(argv)}\n")
        output.flush()
        process = subprocess.Popen(  # noqa: S603 - fixed argv built here
            argv, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            code = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            process.terminate()  # the scripts clean up on SIGTERM
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            code = None
    wall = time.monotonic() - started
    print(f"   {wall:.0f} s, exit {code}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"name": name, "arguments": arguments, "wall_s": wall, "exit": code}
    if code == 0 and out.exists():
        result |= json.loads(out.read_text())
    else:
        tail = log.read_text(errors="replace")[-1500:]
        why = f"timed out after {limit:g} s" if code is None else f"exit status {code}"
        result["failure"] = f"{why}; end of its output:\n{tail}"
    return result


def number(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        text = f"{value:,.0f}".replace(",", " ")
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def row(script: str, fig: dict[str, Any]) -> str:
    baseline = number(fig["baseline"], fig["unit"])
    if fig["baseline"] is not None and fig.get("baseline_name"):
        baseline += f" ({fig['baseline_name']})"
    met = {True: "yes", False: "**no**", None: "—"}[fig["met"]]
    ratio = "—" if fig["ratio"] is None else f"{fig['ratio']:.3g}"
    value = number(fig["value"], fig["unit"])
    if fig.get("note"):
        value = f"— ({fig['note']})"
    cells = [
        f"{fig['figure']} [{script}]",
        value,
        baseline,
        ratio,
        fig["goal"] or "—",
        met,
    ]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def shared_note(loads: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    """Whether other work ran beside the benchmarks: a 1-minute load average at the start
    above half the cores (the scripts themselves load the machine towards the end)."""
    cores = len(os.sched_getaffinity(0))
    averages = (
        f"Load average (1, 5, 15 min) at the start: {' / '.join(f'{x:.2f}' for x in loads[0])};"
        f" at the end: {' / '.join(f'{x:.2f}' for x in loads[1])}."
    )
    if loads[0][0] > cores / 2:
        return (
            "**The machine was shared with other work during this run: the figures are noisy**"
            " (a ratio is between two measurements of the same run, taken one after the other,"
            f" so it is less noisy than a figure alone, but expect ±30 % or more). {averages}"
        )
    return (
        f"The machine ran nothing else when the run started (1-minute load average at most"
        f" half of its {cores} cores). {averages}"
    )


def report(
    results: list[dict[str, Any]],
    started: dt.datetime,
    wall: float,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    host: dict[str, str],
    software: dict[str, str],
) -> str:
    figures = [(r["name"], f) for r in results for f in r.get("figures", [])]
    met = sum(1 for _, f in figures if f["met"] is True)
    missed = sum(1 for _, f in figures if f["met"] is False)
    lines = [
        "# Benchmarks: `make bench`",
        "",
        f"Run at {started:%Y-%m-%d %H:%M} UTC, {wall / 60:.1f} minutes in all"
        f" ({len(results)} scripts, {len(figures)} figures; goals met: {met}, missed: {missed}).",
        "",
        shared_note(loads),
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in host.items()),
        "",
        "## Versions",
        "",
        *(f"- {key}: {value}" for key, value in software.items()),
        "",
        "## Figures",
        "",
        "ratio = value ÷ baseline; the baseline is measured by the same script in the same run"
        " (what it is, in brackets). Goals: from `bench/README.md`, the runbook's service levels"
        " (p95 < 500 ms, error rate < 1 %) and the issue (idle RSS: API ≤ 120 MB, a worker"
        " process ≤ 100 MB). The script of each figure is in square brackets; its own output"
        " has more (segments, CPU per party, plans).",
        "",
        "| figure | value | baseline (same run) | ratio | goal | met? |",
        "|---|---:|---|---:|---|---|",
        *(row(script, fig) for script, fig in figures),
        "",
        "## Runs",
        "",
        "| script | arguments | wall time | result |",
        "|---|---|---:|---|",
    ]
    for r in results:
        outcome = "ok" if "failure" not in r else r["failure"].split(";", 1)[0]
        lines.append(
            f"| {r['name']} | `{' '.join(r['arguments']) or '(defaults)'}` |"
            f" {r['wall_s']:.0f} s | {outcome} |"
        )
    failures = [r for r in results if "failure" in r]
    for r in failures:
        lines += ["", f"### {r['name']} failed", "", "```", r["failure"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [name for name, _, _ in SCRIPTS]
    parser.add_argument("--only", nargs="+", choices=names, metavar="SCRIPT", help="a subset")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    args = parser.parse_args()
    started_at = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    load_start = os.getloadavg()
    host, software = machine(), versions()
    raw = RESULTS / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="formula-ops-bench-all-") as tmp:
        for name, arguments, limit in SCRIPTS:
            if args.only and name not in args.only:
                continue
            results.append(run_script(name, arguments, limit, raw, Path(tmp)))
    wall = time.monotonic() - started
    text = report(results, started_at, wall, (load_start, os.getloadavg()), host, software)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"{args.output} written; {wall / 60:.1f} minutes", file=sys.stderr)
    if any("failure" in r for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
