"""Memory and throughput of a backup streamed from PostgreSQL to a storage.

Creates a scratch PostgreSQL database holding about ``--size-mb`` of table data (one
table filled by ``generate_series``: 512 characters of hex text a row, under the size
PostgreSQL would compress), then, in this process:

1. the baseline: ``pg_dump`` of the same database to ``/dev/null`` (its wall time);
2. the backup: :class:`app.backups.postgres.PostgresSource` ``dump`` → SHA-256 of the
   dump's bytes → gzip (plain format; custom is compressed by ``pg_dump``) → SHA-256 →
   :class:`app.backups.storage.FileStorage` writer → ``complete``;
3. the object read back from the storage and hashed again (it must match).

This process's resident memory is sampled every 100 ms (``VmRSS`` of
``/proc/self/status``, from a thread) from before the backup starts; the script prints
its value before, its peak, and the throughput of each phase beside the baseline, and
the longest the event loop was held up (a 10 ms sleep's overshoot: gzip and hashing run
on the loop's thread). The
database and the stored object are removed at the end, also on error.

    .venv/bin/python bench/backup_stream.py                      # 1024 MB, plain
    .venv/bin/python bench/backup_stream.py --size-mb 50 --format custom

Environment: ``FORMULA_OPS_BENCH_PG_ADMIN_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) names the database to connect to for
``CREATE DATABASE`` / ``DROP DATABASE``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from common import add_json_option, figure, write_json

from app.backups.postgres import PostgresSource
from app.backups.storage import FileStorage
from app.backups.stream import Digest, gzip

PG_ADMIN_URL = os.environ.get(
    "FORMULA_OPS_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ROW_CHARS = 512  # 4 MD5 hex digests, 4 times
GOAL_PEAK_MB = 200
MB = 1 << 20


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match is not None
    return int(match.group(1)) / 1024


class RssSampler:
    """The peak of this process's RSS, sampled every ``interval`` s from a thread."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


@contextmanager
def scratch_database(size_mb: int) -> Iterator[tuple[str, float]]:
    """The database's URL and the size of its tables (MB)."""
    name = f"formula_ops_bench_backup_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    try:
        rows = size_mb * MB // (ROW_CHARS + 10)
        started = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            # Unlogged (no WAL to write) and without an index: generated in minutes.
            conn.execute("CREATE UNLOGGED TABLE payload (id bigint, body text NOT NULL)")
            conn.execute(
                "INSERT INTO payload SELECT g, repeat(md5(g::text) || md5((g * 7)::text)"
                " || md5((g * 13)::text) || md5((g * 31)::text), 4)"
                " FROM generate_series(1, %s) g",
                [rows],
            )
            conn.execute("CREATE TABLE small (id int)")
            conn.execute("INSERT INTO small SELECT generate_series(1, 1000)")
            row = conn.execute(
                "SELECT pg_database_size(current_database()),"
                " pg_total_relation_size('payload') + pg_total_relation_size('small')"
            ).fetchone()
            assert row is not None
        print(
            f"generated {rows} rows in {time.monotonic() - started:.1f} s;"
            f" tables {row[1] / MB:.0f} MB, database {row[0] / MB:.0f} MB"
        )
        yield url, row[1] / MB
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def baseline(source: PostgresSource) -> float:
    """Wall time of ``pg_dump`` of the same database into ``/dev/null``."""
    argv = ["pg_dump", f"--format={source.format}", "--no-owner", "--no-privileges"]
    if source.format == "custom":
        argv.append("--compress=6")
    started = time.monotonic()
    subprocess.run(  # noqa: S603 - argv built here
        argv, env=source.target.env(), stdout=subprocess.DEVNULL, check=True
    )
    return time.monotonic() - started


async def backup(source: PostgresSource, storage: FileStorage, key: str) -> dict[str, float]:
    async def log(line: str) -> None:
        print(f"  {line}")

    stall = 0.0  # the event loop's longest delay of a 10 ms sleep (work run on the loop)

    async def ticker() -> None:
        nonlocal stall
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.01)
            stall = max(stall, time.monotonic() - started - 0.01)

    ticking = asyncio.create_task(ticker())

    raw, packed = Digest(), Digest()
    started = time.monotonic()
    async with source.dump(log) as dump:
        body = raw.tap(dump.chunks)
        writer = await storage.open_writer(key)
        try:
            async for chunk in packed.tap(gzip(body) if source.compress else body):
                await writer.write(chunk)
            await dump.finished()
        except BaseException:
            await writer.abort()
            raise
        await writer.complete()
    written = time.monotonic() - started
    started = time.monotonic()
    back = Digest()
    async for _ in back.tap(storage.read(key)):
        pass
    read = time.monotonic() - started
    ticking.cancel()
    assert back.sha256 == packed.sha256, "the object read back differs"
    assert back.size == packed.size
    return {
        "dump_mb": raw.size / MB,
        "stored_mb": packed.size / MB,
        "write_s": written,
        "read_s": read,
        "stall_s": stall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="table data to dump")
    parser.add_argument("--format", choices=["plain", "custom"], default="plain")
    add_json_option(parser)
    args = parser.parse_args()
    with scratch_database(args.size_mb) as (url, data_mb), tempfile.TemporaryDirectory() as folder:
        source = PostgresSource(url, format=args.format)
        storage = FileStorage(Path(folder))
        base_s = baseline(source)
        before = rss_mb()
        with RssSampler() as sampler:
            result = asyncio.run(backup(source, storage, f"bench/db/backup{source.extension}"))
        dump_mb = result["dump_mb"]
        print(f"format {args.format}: dump {dump_mb:.0f} MB, stored {result['stored_mb']:.0f} MB")
        print(
            f"baseline pg_dump > /dev/null: {base_s:.1f} s"
            f" ({data_mb / base_s:.0f} MB/s of table data)"
        )
        print(
            f"dump -> hash -> {'gzip -> hash -> ' if source.compress else ''}storage:"
            f" {result['write_s']:.1f} s ({data_mb / result['write_s']:.0f} MB/s of table data,"
            f" {result['write_s'] / base_s:.2f}x the baseline's time)"
        )
        print(
            f"read back + hash: {result['read_s']:.1f} s"
            f" ({result['stored_mb'] / result['read_s']:.0f} MB/s); hashes match;"
            f" longest event-loop stall {result['stall_s'] * 1000:.0f} ms"
        )
        verdict = "met" if sampler.peak < GOAL_PEAK_MB else "MISSED"
        print(
            f"RSS before {before:.0f} MB, peak {sampler.peak:.0f} MB"
            f" (+{sampler.peak - before:.0f} MB; {sampler.samples} samples at 100 ms);"
            f" goal < {GOAL_PEAK_MB} MB {verdict}"
        )
        label = f"backup of {data_mb:.0f} MB ({args.format})"
        write_json(
            args.json,
            "backup_stream",
            [
                figure(
                    f"{label}, peak RSS of the process",
                    sampler.peak,
                    "MB",
                    baseline=before,
                    baseline_name="RSS before the backup",
                    goal=f"< {GOAL_PEAK_MB} MB",
                    met=sampler.peak < GOAL_PEAK_MB,
                ),
                figure(
                    f"{label}, dump -> storage time",
                    result["write_s"] * 1000,
                    "ms",
                    baseline=base_s * 1000,
                    baseline_name="pg_dump > /dev/null",
                ),
                figure(
                    f"{label}, longest event-loop stall",
                    result["stall_s"] * 1000,
                    "ms",
                ),
            ],
        )


if __name__ == "__main__":
    main()
