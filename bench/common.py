"""The machinery the benchmark scripts share (a script's own folder is on ``sys.path``):
the load generator (raw asyncio HTTP/1.1 keep-alive connections, saturation and open-loop
paced phases), CPU sampling from ``/proc``, a scratch PostgreSQL database, and starting a
server process and waiting until it answers."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from pydantic import SecretStr

PG_ADMIN_URL = os.environ.get(
    "FORMULA_OPS_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FORMULA_OPS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO_ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT = 30.0
# At the fixed rate, a server that cannot keep up is not sent more than this many requests
# at once (the others count as failed): what it was sent is what it works through after.
MAX_OUTSTANDING = 200
KEEP_ALIVE_REUSE = 4.0  # s: uvicorn closes a connection idle for 5 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


class Connection:
    """One HTTP/1.1 keep-alive connection; answers are read by their Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if length is None:
            raise ConnectionError(f"an answer without Content-Length: {head[:200]!r}")
        body = await self.reader.readexactly(int(length.group(1)))
        if re.search(rb"(?im)^connection:\s*close", head):
            self.close()
        return int(head[9:12]), body

    def close(self) -> None:
        self.writer.close()


class Requests:
    """The bytes of request ``n`` of a phase: its own body and ``Idempotency-Key``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.port: int = spec["port"]
        self.expect: int = spec["expect"]
        self.body: str = spec["body"]
        self.key = f"{spec['name']}-{os.getpid()}-{time.time_ns()}-"
        self.head = (
            f"POST {spec['path']} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in spec["headers"].items())
            + "Content-Type: application/json\r\n"
        )

    def build(self, n: int) -> bytes:
        body = self.body.replace("{n}", str(n)).encode()
        return (
            f"{self.head}Idempotency-Key: {self.key}{n}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    sent: int = 0  # every request answered or failed, warm-up included
    samples: list[str] = field(default_factory=list)

    def failed(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 3:
            self.samples.append(what)


async def exchange(
    conn: Connection | None, port: int, data: bytes, expect: int
) -> tuple[Connection | None, str | None]:
    """Send one request; returns the connection to reuse (None once it failed or was
    closed) and what went wrong (None: the expected answer)."""
    try:
        if conn is None:
            conn = await Connection.open(port)
        status, body = await asyncio.wait_for(conn.request(data), REQUEST_TIMEOUT)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        if conn is not None:
            conn.close()
        return None, f"{type(exc).__name__}: {exc}"
    if conn.writer.is_closing():
        conn = None
    if status != expect:
        return conn, f"HTTP {status} {body[:300].decode(errors='replace')}"
    return conn, None


async def saturate(spec: dict[str, Any]) -> dict[str, Any]:
    requests, tally = Requests(spec), Tally()
    counter = itertools.count()
    started = time.monotonic()
    measure_from = started + spec["warmup"]
    end = measure_from + spec["seconds"]
    per_second = [0] * math.ceil(spec["seconds"])

    async def client() -> None:
        conn: Connection | None = None
        while time.monotonic() < end:
            data = requests.build(next(counter))
            conn, error = await exchange(conn, requests.port, data, requests.expect)
            tally.sent += 1
            now = time.monotonic()
            if not measure_from <= now < end:
                continue
            if error is None:
                tally.ok += 1
                per_second[int(now - measure_from)] += 1
            else:
                tally.failed(error)
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client() for _ in range(spec["clients"])))
    return {
        "per_s": tally.ok / spec["seconds"],
        "per_second": per_second,
        "errors": tally.errors,
        "samples": tally.samples,
        "sent": tally.sent,
    }


async def paced(spec: dict[str, Any]) -> dict[str, Any]:
    requests, tally = Requests(spec), Tally()
    rate = spec["rate"]
    warmup = round(spec["warmup"] * rate)
    total = warmup + round(spec["seconds"] * rate)
    # Idle connections, last used last; one idle for longer than uvicorn's keep-alive
    # timeout (5 s) may be closed by the server, so it is not reused.
    idle = [(await Connection.open(requests.port), time.monotonic()) for _ in range(8)]
    latencies: list[float] = []
    lateness: list[float] = []

    outstanding = 0

    async def one(n: int, due: float) -> None:
        nonlocal outstanding
        if outstanding >= MAX_OUTSTANDING:
            conn, error = None, f"not sent: {outstanding} requests outstanding"
        else:
            outstanding += 1
            conn = None
            while idle and conn is None:
                conn, used = idle.pop()
                if time.monotonic() - used > KEEP_ALIVE_REUSE:
                    conn.close()
                    conn = None
            conn, error = await exchange(conn, requests.port, requests.build(n), requests.expect)
            outstanding -= 1
            tally.sent += 1
        if n >= warmup:
            # A failure counts as slower than any answer (JSON carries it as Infinity).
            latencies.append((time.monotonic() - due) * 1000 if error is None else math.inf)
            if error is not None:
                tally.failed(error)
        if conn is not None:
            idle.append((conn, time.monotonic()))

    tasks = []
    start = time.monotonic() + 0.05
    for n in range(total):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if n >= warmup:
            lateness.append((time.monotonic() - due) * 1000)
        tasks.append(asyncio.create_task(one(n, due)))
    await asyncio.gather(*tasks)
    for conn, _ in idle:
        conn.close()
    return {
        "latencies_ms": latencies,
        "errors": tally.errors,
        "samples": tally.samples,
        "sent": tally.sent,
        "late_ms_p99": percentile(lateness, 99),
    }


def run_load(spec: dict[str, Any]) -> None:
    pin(spec.get("cpu"))
    started_cpu = time.process_time()
    started = time.monotonic()
    result = asyncio.run(saturate(spec) if spec["mode"] == "saturate" else paced(spec))
    result["cpu_percent"] = (time.process_time() - started_cpu) / (time.monotonic() - started)
    result["cpu_percent"] *= 100
    print(json.dumps(result))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def host_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole host so far, from ``/proc/stat``."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def total_cpu_seconds(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn options of ``formula-ops api`` (one place names them)."""
    from app.cli.serving import UVICORN_OPTIONS

    return dict(UVICORN_OPTIONS)


@contextmanager
def scratch_postgres(name: str, directory: Path, setup: Sequence[str] = ()) -> Iterator[str]:
    """A scratch PostgreSQL database ``name``, migrated by ``app.core.migrate.upgrade``,
    then the ``setup`` statements; dropped afterwards, also on error."""
    from app.core import migrate
    from app.core.settings import Settings

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
        migrate.upgrade(Settings(database_url=SecretStr(url), state_dir=directory))
        if setup:
            with psycopg.connect(url, autocommit=True) as conn:
                for statement in setup:
                    conn.execute(statement)  # type: ignore[arg-type]
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def started_server(
    name: str, argv: list[str], env: dict[str, str], log: Path, port: int, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` in a process (and session) of its own, its output in ``log``, once
    ``GET /health`` on ``port`` answers 200; stopped afterwards."""
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - argv built by the bench
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {name} server did not start:\n{log_tail(log)}")
            time.sleep(0.1)
        yield process
    finally:
        stop_process(process)


# -- machine-readable figures (``--json PATH`` of every script, read by ``run_all.py``) ------


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_name: str = "",
    ratio: float | None = None,
    goal: str = "",
    met: bool | None = None,
) -> dict[str, Any]:
    """One figure of a script: its value, its baseline measured in the same run (and the
    ratio value ÷ baseline unless given), and its goal with whether it is met (``None``:
    no goal)."""
    note = ""
    if math.isinf(value):  # a percentile of latencies with failed requests among them
        note = "requests failed: counted as slower than any answer"
    if ratio is None and baseline is not None and baseline != 0 and math.isfinite(value):
        ratio = value / baseline
    if baseline is not None and math.isinf(baseline):
        baseline_name += " (requests failed)"
    return {
        "figure": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ratio,
        "goal": goal,
        "met": met,
        "note": note,
    }


def add_json_option(parser: Any) -> None:
    parser.add_argument(
        "--json", metavar="PATH", help="also write the figures there (machine-readable)"
    )


def write_json(path: str | None, script: str, figures: list[dict[str, Any]], **extra: Any) -> None:
    """The figures as JSON (non-finite numbers as null) when ``--json PATH`` was given."""
    if not path:
        return

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    document = {"script": script, "figures": figures, **extra}
    Path(path).write_text(json.dumps(clean(document), indent=2) + "\n")
