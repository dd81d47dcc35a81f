"""Prometheus metrics.

Counted where they happen (each process its own counters): HTTP requests by route
template and status; runs finished by kind and status; run durations by kind; step
failures by action; deployment outcomes.

Read at scrape time, once, by the process that answers ``/metrics``
(:class:`ScrapeGauges`): runs in the database by kind and status, and the depth of the
arq queue. A source that does not answer within a short timeout is left out of that
scrape and shown as ``formula_ops_metrics_source_up{source=...} 0``; the scrape itself
still answers.

Several processes (``api --workers N``, ``worker --processes N``, ``serve``): the
command that starts them calls :func:`prepare_multiprocess` first, which points
prometheus-client's multiprocess mode at one directory (``PROMETHEUS_MULTIPROC_DIR``,
by default ``<state_dir>/metrics``). Every process writes its counters there and any
``/metrics`` answer sums them, the worker processes' included when they share the
directory. No ``_created`` series are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Iterable, Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

logger = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A series Prometheus derives itself (from the first sample); it doubles the output.
disable_created_metrics()  # type: ignore[no-untyped-call]

RUN_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# How long a scrape waits for Redis (queue depth) or the database (runs by status).
SCRAPE_TIMEOUT = 1.0


# -- several processes ---------------------------------------------------------------------


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROCESS_ENV)
    return Path(value) if value else None


def prepare_multiprocess(state_dir: Path) -> Path:
    """Turn on multiprocess mode for this process and the processes it starts (they
    inherit the environment variable): in ``$PROMETHEUS_MULTIPROC_DIR`` when set, else in
    ``<state_dir>/metrics`` (a private temporary directory if that cannot be created).

    Called by the parent before it creates any metric or child. The files of processes
    that are gone (an earlier run) and any left under this process's id are removed;
    those of live processes (another command sharing the directory) stay."""
    configured = multiprocess_dir()
    directory = configured or state_dir / "metrics"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        if configured is not None:
            raise
        directory = Path(tempfile.mkdtemp(prefix="formula-ops-metrics-"))
    for path, pid in _files(directory):
        if pid == os.getpid() or not _alive(pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    os.environ[MULTIPROCESS_ENV] = str(directory)
    # prometheus-client chose its value class when it was imported; choose again.
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return directory


def mark_dead_processes(directory: Path) -> None:
    """prometheus-client's bookkeeping for processes that ended (their live gauges go;
    their counters keep counting in the sums)."""
    for pid in {pid for _, pid in _files(directory)}:
        if not _alive(pid):
            process_ended(pid)


def process_ended(pid: int) -> None:
    """What a parent calls when a child process it started has ended."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def _files(directory: Path) -> Iterator[tuple[Path, int]]:
    """``<type>_<pid>.db`` files (``gauge_<mode>_<pid>.db`` for gauges)."""
    for path in directory.glob("*.db"):
        tail = path.stem.rpartition("_")[2]
        if tail.isdigit():
            yield path, int(tail)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# -- read at scrape time -------------------------------------------------------------------


class ScrapeGauges(Collector):
    """Gauges whose values are read from the database or Redis when ``/metrics`` is
    scraped, collected only by the process that answers (never summed per process).
    :meth:`set` adds or replaces one family; a family not set this scrape is left out."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily] = {}

    def set(
        self,
        name: str,
        documentation: str,
        samples: Iterable[tuple[tuple[str, ...], float]],
        labels: tuple[str, ...] = (),
    ) -> None:
        family = GaugeMetricFamily(name, documentation, labels=list(labels))
        for label_values, value in samples:
            family.add_metric(list(label_values), value)
        self._families[name] = family

    def drop(self, name: str) -> None:
        self._families.pop(name, None)

    def collect(self) -> Iterable[Metric]:
        return list(self._families.values())

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    """One registry per application, so several apps (tests) never share counters; in
    multiprocess mode the values live in files and every process's are rendered."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "formula_ops_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "formula_ops_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.auth_rate_limited = Counter(
            "formula_ops_auth_rate_limited",
            "Requests refused (429) because their address passed the failed-authentication "
            "limit; the first per address and minute is audited, the rest only counted here.",
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "formula_ops_runs_finished",
            "Runs that ended (in a worker, or cancelled before they started), by kind and "
            "final status.",
            ["kind", "status"],
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "formula_ops_run_duration_seconds",
            "Time from a run's first claim by a worker to its end, by kind.",
            ["kind"],
            registry=self.registry,
            buckets=RUN_DURATION_BUCKETS,
        )
        self.step_failures = Counter(
            "formula_ops_step_failures",
            "Steps that ended failed (an error, a timeout or a critical probe), by action.",
            ["action"],
            registry=self.registry,
        )
        self.deployments = Counter(
            "formula_ops_deployments",
            "Deployment and rollback runs finished, by kind, environment and outcome "
            "(success, failure, error, cancelled, rolled_back).",
            ["kind", "environment", "outcome"],
            registry=self.registry,
        )
        self.audit_seal_delay = Histogram(
            "formula_ops_audit_seal_delay_seconds",
            "From an audit event's creation to its sealing into the hash chain, observed by "
            "the process that sealed it.",
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30),
        )
        self.webhook_attempts = Counter(
            "formula_ops_webhook_attempts",
            "Webhook and notification attempts made, by outcome (success, failure) and "
            "trigger (scheduled, redelivery, test).",
            ["outcome", "trigger"],
            registry=self.registry,
        )
        self.webhook_attempt_duration = Histogram(
            "formula_ops_webhook_attempt_duration_seconds",
            "Time of one webhook attempt, from the request to the response (or the error).",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
        )
        self.scraped = ScrapeGauges()
        self.registry.register(self.scraped)
        self._down: set[str] = set()

    # -- counted where it happens ---------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_run(
        self, kind: str, status: str, seconds: float | None, *, environment: str | None
    ) -> None:
        """A run ended (counted once, by the process that committed its end)."""
        self.runs_finished.labels(kind, status).inc()
        if seconds is not None:
            self.run_duration.labels(kind).observe(max(seconds, 0.0))
        if kind in ("deployment", "rollback"):
            self.deployments.labels(kind, environment or "", status).inc()

    def observe_webhook_attempt(self, succeeded: bool, trigger: str, milliseconds: int) -> None:
        self.webhook_attempts.labels("success" if succeeded else "failure", trigger).inc()
        self.webhook_attempt_duration.observe(milliseconds / 1000)

    def observe_step(self, action: str, status: str) -> None:
        if status == "failure":
            self.step_failures.labels(action).inc()

    # -- read at scrape time --------------------------------------------------------------

    async def refresh(
        self,
        run_counts: Awaitable[Iterable[tuple[str, str, int]]],
        seal_lag: Awaitable[float | None],
        redis: Redis,
        queue_name: str,
        limit: float,
    ) -> None:
        """Read the scrape-time gauges: ``run_counts`` (runs by kind and status, as
        :func:`app.runs.service.count_by_kind_and_status` reads them from the database),
        ``seal_lag`` (the age of the oldest unsealed audit event, None when every event is
        sealed) and the queue depth from Redis. Each source that fails or is slow is left out of
        this scrape and marked down, never failing it."""
        limit = min(limit, SCRAPE_TIMEOUT)
        database, queue = await asyncio.gather(
            self._read("database", self._read_database(run_counts, seal_lag), limit),
            self._read("redis", self.refresh_queue(redis, queue_name), limit),
        )
        up = {"database": database, "redis": queue}
        self.scraped.set(
            "formula_ops_metrics_source_up",
            "Whether this scrape could read the source (1) or not (0).",
            [((source,), 1.0 if ok else 0.0) for source, ok in up.items()],
            labels=("source",),
        )

    async def _read(self, source: str, read: Awaitable[None], limit: float) -> bool:
        try:
            async with asyncio.timeout(limit):
                await read
        except Exception as exc:
            if source not in self._down:
                logger.warning(
                    "metrics: could not read the %s (%s); its series are left out until it answers",
                    source,
                    "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__,
                )
            self._down.add(source)
            return False
        self._down.discard(source)
        return True

    async def _read_database(
        self, counts: Awaitable[Iterable[tuple[str, str, int]]], seal_lag: Awaitable[float | None]
    ) -> None:
        self.scraped.drop("formula_ops_runs")
        self.scraped.drop("formula_ops_audit_seal_lag_seconds")
        rows, lag = await asyncio.gather(counts, seal_lag)
        self.scraped.set(
            "formula_ops_audit_seal_lag_seconds",
            "Age of the oldest committed audit event not yet sealed into the hash chain "
            "(0 when every event is sealed), read from the database.",
            [((), max(0.0, lag or 0.0))],
        )
        self.scraped.set(
            "formula_ops_runs",
            "Runs in the database, by kind and status.",
            [((kind, status), float(count)) for kind, status, count in rows],
            labels=("kind", "status"),
        )

    async def refresh_queue(self, redis: Redis, queue_name: str) -> None:
        self.scraped.drop("formula_ops_queue_depth")
        # arq scores a job by when it may start: those due by now wait for a worker; the
        # later ones (the next periodic job, a deferred retry) are not a backlog.
        depth = await redis.zcount(queue_name, "-inf", int(time.time() * 1000))
        self.scraped.set(
            "formula_ops_queue_depth",
            "Jobs in the arq queue that are due and wait for a worker (jobs deferred to a "
            "later time not counted), read from Redis.",
            [((), float(depth))],
        )

    def render(self) -> bytes:
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        mark_dead_processes(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]
        registry.register(self.scraped)
        return generate_latest(registry)
