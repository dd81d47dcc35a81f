# ruff: noqa: ASYNC240 (small files of the test, read and written inline)
"""Hostile probes of the backup core: secrets, injection through names and smoke queries,
broken sources and storages, damaged objects, and concurrent takes — on the real parts
(PostgreSQL of this machine, SQLite files, a folder storage in ``tmp_path``, moto's S3
emulator). Every database a test creates has a unique name and is dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip as gzip_module
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from app.backups import pipeline
from app.backups import postgres as postgres_module
from app.backups import service as backups
from app.backups import sqlite as sqlite_module
from app.backups.models import Backup, BackupOrigin, BackupStatus
from app.backups.postgres import PostgresSource, derived_name
from app.backups.sources import SourceError
from app.backups.sqlite import SqliteSource
from app.backups.storage import FileStorage, StorageError
from app.backups.storage_s3 import S3Storage
from app.backups.stream import CorruptError, gunzip, gzip
from app.bootstrap import build_context
from app.core.context import AppContext
from app.core.ids import new_id
from app.environments.models import Environment
from app.models import OutboxEvent
from tests.backups.s3_server import S3Server
from tests.helpers import PG_ADMIN_URL, create_pg_database, pg_url

# The control plane's own database is not what these probe: one is enough.
pytestmark = [pytest.mark.slow, pytest.mark.one_backend("sqlite")]

# A short one (below the scrubber's minimum length) and a URL-encoded one.
SHORT_PASSWORD = "pw1"
ENCODED_PASSWORD = "p%40ss-Hostile-91"  # p@ss-Hostile-91
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)


async def no_upload(upload_id: str) -> None:
    return None


def admin(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        cursor = conn.execute(sql, params or None)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def pg_names_like(prefix: str) -> list[str]:
    rows = admin("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", prefix)
    return [str(row[0]) for row in rows]


def with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


@contextlib.contextmanager
def pg_database(name: str, *statements: str) -> Iterator[str]:
    """A database of the test's own, with what is derived from it dropped afterwards."""
    url = create_pg_database(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]
        yield url
    finally:
        safe = derived_name(name, "x").rsplit("_x_", 1)[0]
        for leftover in {name, *pg_names_like(f"{safe}_")}:
            drop_database(leftover)


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)
            )
        )


def unique(prefix: str = "bk_hostile") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def make_sqlite(path: Path, tables: dict[str, int]) -> None:
    conn = sqlite3.connect(path)
    for table, rows in tables.items():
        quoted = '"' + table.replace('"', '""') + '"'
        conn.execute(f"CREATE TABLE {quoted} (id INTEGER PRIMARY KEY, note TEXT)")
        conn.executemany(
            f"INSERT INTO {quoted} (note) VALUES (?)",  # noqa: S608
            [(f"row {i}",) for i in range(rows)],
        )
    conn.commit()
    conn.close()


# -- injection: names ---------------------------------------------------------------------


ODD_TABLES = ['we"ird', "semi;colon", "dollar$$quote", "ünïcødé", "drop table x; --"]


async def test_sqlite_odd_table_names_round_trip(tmp_path: Path) -> None:
    database = tmp_path / "odd.db"
    make_sqlite(database, {name: i + 3 for i, name in enumerate(ODD_TABLES)})
    source = SqliteSource(f"sqlite:///{database}")
    storage = FileStorage(tmp_path / "store")
    taken = await pipeline.take(source, storage, "env/odd/1.db.gz", Log(), no_upload)
    assert taken.row_counts == {name: i + 3 for i, name in enumerate(ODD_TABLES)}
    drilled = await pipeline.drill(
        source,
        storage,
        "env/odd/1.db.gz",
        size=taken.size,
        sha256=taken.sha256,
        row_counts=taken.row_counts,
        smoke_queries=['SELECT * FROM "we""ird"'],
        log=Log(),
    )
    assert drilled.passed, drilled
    assert [p.name for p in tmp_path.iterdir() if ".scratch-" in p.name] == []


@pytest.mark.parametrize(
    "database",
    ['bk_q"uo;te$$', "bk_ünï_cødé", "BK Mixed Case"],
)
async def test_postgres_odd_database_names_drill_and_promote(tmp_path: Path, database: str) -> None:
    name = f"{database}_{uuid.uuid4().hex[:6]}"
    setup = [
        'CREATE TABLE "t""1;$$" (id int)',
        'INSERT INTO "t""1;$$" SELECT generate_series(1, 42)',
        'CREATE TABLE "ünï" (id int)',
        'INSERT INTO "ünï" VALUES (1)',
    ]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    try:
        url = with_password(pg_url(name.replace(" ", "%20").replace("$", "%24")), SHORT_PASSWORD)
        url = url.replace('"', "%22").replace(";", "%3B")
        with psycopg.connect(dbname=name, host="127.0.0.1", user="postgres") as conn:
            for statement in setup:
                conn.execute(statement)  # type: ignore[arg-type]
        source = PostgresSource(url)
        assert source.database == name
        storage = FileStorage(tmp_path)
        key = backups.object_key("env", source.database, new_id(), source.extension)
        assert storage.object_url(key).startswith(tmp_path.as_uri())
        log = Log()
        taken = await pipeline.take(source, storage, key, log, no_upload)
        assert taken.row_counts == {'public.t"1;$$': 42, "public.ünï": 1}
        # The target changes after the backup; the restore brings it back.
        with psycopg.connect(dbname=name, host="127.0.0.1", user="postgres") as conn:
            conn.execute('DELETE FROM "t""1;$$"')
        drilled = await pipeline.drill(
            source,
            storage,
            key,
            size=taken.size,
            sha256=taken.sha256,
            row_counts=taken.row_counts,
            smoke_queries=['SELECT * FROM "t""1;$$"'],
            log=log,
            promote=True,
        )
        assert drilled.passed, drilled
        with psycopg.connect(dbname=name, host="127.0.0.1", user="postgres") as conn:
            assert conn.execute('SELECT count(*) FROM "t""1;$$"').fetchone() == (42,)
        assert not any(SHORT_PASSWORD in line for line in log.lines)
    finally:
        drop_database(name)
        for leftover in pg_names_like(derived_name(name, "x").rsplit("_x_", 1)[0] + "_"):
            drop_database(leftover)


def test_derived_names_are_short_plain_and_unique() -> None:
    for database in ("x" * 200, "é" * 40 + "ü" * 40, '"; DROP DATABASE postgres; --', "9lives"):
        names = {derived_name(database, "scratch") for _ in range(50)}
        assert len(names) == 50
        for name in names:
            assert len(name.encode()) <= 63
            assert name.replace("_", "a").isalnum()
            assert name.isascii()
            assert name[0].isalpha() or name[0] == "_"


async def test_postgres_long_database_name_can_be_restored(tmp_path: Path) -> None:
    long_name = unique("bk_long") + "_" + "y" * 70
    truncated = long_name.encode()[:63].decode()
    with pg_database(truncated, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1), (2)"):
        source = PostgresSource(pg_url(long_name))
        assert source.database == truncated
        storage = FileStorage(tmp_path)
        taken = await pipeline.take(source, storage, "e/long/1.dump", Log(), no_upload)
        drilled = await pipeline.drill(
            source,
            storage,
            "e/long/1.dump",
            size=taken.size,
            sha256=taken.sha256,
            row_counts=taken.row_counts,
            smoke_queries=[],
            log=Log(),
            promote=True,
        )
        assert drilled.passed


# -- injection: object keys -----------------------------------------------------------------

BAD_KEYS = [
    "../escape.dump",
    "a/../../escape.dump",
    "a/./b.dump",
    "/abs/path.dump",
    "a//b.dump",
    "%2e%2e/escape.dump",
    "a\x00b.dump",
    "a\\..\\b.dump",
    "",
    ".",
    "..",
    "a/b/",
    "a b.dump",
    "a\nb.dump",
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_file_storage_refuses_keys_escaping_its_root(tmp_path: Path, key: str) -> None:
    storage = FileStorage(tmp_path / "root")
    with pytest.raises(StorageError):
        storage.object_url(key)
    with pytest.raises(StorageError):
        await storage.open_writer(key)
    with pytest.raises(StorageError):
        async for _ in storage.read(key):
            pass
    with pytest.raises(StorageError):
        await storage.delete(key)
    with pytest.raises(StorageError):
        await storage.abort_partial(key, "x.partial")
    assert files_under(tmp_path) == []


async def test_file_storage_abort_partial_refuses_foreign_names(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path / "root")
    writer = await storage.open_writer("e/db/1.dump")
    await writer.write(b"abc")
    await writer.complete()
    for upload_id in ("../../victim.partial", "1.dump", "", "/etc/passwd"):
        with pytest.raises(StorageError):
            await storage.abort_partial("e/db/1.dump", upload_id)
    assert await storage.size("e/db/1.dump") == 3


async def test_s3_storage_refuses_keys_escaping_its_prefix(moto_s3: S3Server) -> None:
    bucket = moto_s3.create_bucket()
    storage = moto_s3.storage(f"s3://{bucket}/root")
    for key in BAD_KEYS:
        with pytest.raises(StorageError):
            storage.object_url(key)
        with pytest.raises(StorageError):
            await storage.open_writer(key)
        with pytest.raises(StorageError):
            await storage.delete(key)
    listed = moto_s3.client().list_objects_v2(Bucket=bucket)
    assert listed.get("KeyCount", 0) == 0
    assert moto_s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_object_keys_of_hostile_database_names_stay_inside() -> None:
    for database in ("..", "../../etc", "a/b", "%2e%2e", "x\x00y", "a\\b", ".hidden", "ü"):
        key = backups.object_key("staging", database, new_id(), ".dump")
        parts = key.split("/")
        assert len(parts) == 3
        assert parts[0] == "staging"
        assert parts[1] not in ("", ".", "..")
        assert "\\" not in parts[1]
        FileStorage(Path("/nonexistent")).object_url(key)  # a valid key


# -- injection: smoke queries ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def pg_scratch(tmp_path: Path, name: str) -> AsyncIterator[tuple[PostgresSource, Any]]:
    """A backup of database ``name`` loaded into a scratch database."""
    source = PostgresSource(with_password(pg_url(name), SHORT_PASSWORD))
    storage = FileStorage(tmp_path)
    taken = await pipeline.take(source, storage, "e/s/1.dump", Log(), no_upload)
    async with source.scratch(Log()) as scratch:
        await scratch.load(storage.read("e/s/1.dump"))
        assert await scratch.row_counts(sorted(taken.row_counts)) == taken.row_counts
        yield source, scratch


WRITES = [
    "DELETE FROM t",
    "INSERT INTO t VALUES (99)",
    "CREATE TABLE intruder (id int)",
    "UPDATE t SET id = 0",
    "DROP TABLE t",
    "SELECT 1; DELETE FROM t",
    "COMMIT",
    "SET TRANSACTION READ WRITE",
    "SELECT nextval('s')",
    "TRUNCATE t",
]


async def test_postgres_smoke_queries_cannot_write(tmp_path: Path) -> None:
    name = unique()
    with pg_database(
        name, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1), (2), (3)", "CREATE SEQUENCE s"
    ):
        async with pg_scratch(tmp_path, name) as (_, scratch):
            for query in WRITES:
                with contextlib.suppress(SourceError):
                    await scratch.query(query)
            assert await scratch.row_counts(["public.t", "public.intruder"]) == {
                "public.t": 3,
                "public.intruder": -1,
            }
            async with await psycopg.AsyncConnection.connect(
                dbname=scratch.name, host="127.0.0.1", user="postgres"
            ) as conn:
                row = await (await conn.execute("SELECT last_value, is_called FROM s")).fetchone()
                assert row == (1, False)
        rows = admin("SELECT 1 FROM pg_database WHERE datname = %s", name)
        assert rows == [(1,)]


@pytest.mark.xfail(
    strict=True,
    reason="a smoke query runs with the target URL's role in a READ ONLY transaction only: "
    "pg_terminate_backend() on the same server ends the target's sessions",
)
async def test_postgres_smoke_query_cannot_end_sessions_on_the_target(tmp_path: Path) -> None:
    name = unique()
    with pg_database(name, "CREATE TABLE t (id int)"):
        async with pg_scratch(tmp_path, name) as (_, scratch):
            with psycopg.connect(pg_url(name), autocommit=True) as bystander:
                with contextlib.suppress(SourceError):
                    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    await scratch.query(f"{terminate} WHERE datname = '{name}'")
                bystander.execute("SELECT 1")  # still connected


@pytest.mark.xfail(
    strict=True,
    reason="COPY ... TO '<file>' / TO PROGRAM is allowed in a READ ONLY transaction: a smoke "
    "query writes server files (or runs programs) with a superuser URL",
)
async def test_postgres_smoke_query_cannot_write_server_files(tmp_path: Path) -> None:
    name = unique()
    target_file = f"/tmp/{name}.smoke"  # noqa: S108 (a file of the server's)
    with pg_database(name, "CREATE TABLE t (id int)"):
        try:
            async with pg_scratch(tmp_path, name) as (_, scratch):
                with contextlib.suppress(SourceError):
                    await scratch.query(f"COPY (SELECT 'owned') TO '{target_file}'")
            assert admin("SELECT pg_stat_file(%s, true)", target_file) == [(None,)]
        finally:
            admin(f"COPY (SELECT 1) TO PROGRAM 'rm -f {target_file}'")


async def test_sqlite_smoke_queries_cannot_write(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 3})
    source = SqliteSource(f"sqlite:///{database}")
    storage = FileStorage(tmp_path / "store")
    taken = await pipeline.take(source, storage, "e/shop/1.db.gz", Log(), no_upload)
    before = database.read_bytes()
    attached = tmp_path / "attached.db"
    queries = [
        *WRITES,
        f"ATTACH DATABASE 'file:{attached}?mode=rwc' AS x",
        f"ATTACH DATABASE '{attached}' AS x",
        f"VACUUM INTO '{tmp_path / 'vacuumed.db'}'",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 7",
    ]
    drilled = await pipeline.drill(
        source,
        storage,
        "e/shop/1.db.gz",
        size=taken.size,
        sha256=taken.sha256,
        row_counts=taken.row_counts,
        smoke_queries=queries,
        log=Log(),
    )
    assert not drilled.mismatches
    assert [s["query"] for s in drilled.smoke if s["ok"]] == []
    assert database.read_bytes() == before
    assert not attached.exists()
    assert not (tmp_path / "vacuumed.db").exists()


async def test_sqlite_smoke_query_is_ended_by_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endless query (a recursive CTE without end) is ended, as PostgreSQL's
    statement_timeout ends it there; the limit is lowered to keep the test short."""
    monkeypatch.setattr(sqlite_module, "QUERY_TIMEOUT_SECONDS", 1)
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 3})
    source = SqliteSource(f"sqlite:///{database}")
    async with source.scratch(Log()) as scratch:
        await scratch.load(aiter_of(database.read_bytes()))
        assert await scratch.query("SELECT * FROM t") == 3
        with pytest.raises(SourceError, match="longer than"):
            await asyncio.wait_for(
                scratch.query(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                    "SELECT x FROM c"
                ),
                20,
            )


async def aiter_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("password", [SHORT_PASSWORD, ENCODED_PASSWORD])
async def test_postgres_errors_never_carry_the_password(tmp_path: Path, password: str) -> None:
    decoded = password.replace("%40", "@")
    urls = [
        f"postgresql://postgres:{password}@127.0.0.1:1/nowhere",  # refused
        f"postgresql://postgres:{password}@127.0.0.1:5432/{unique('bk_missing')}",  # no db
        f"postgresql://postgres:{password}@127.0.0.1:5432/x?sslmode=bogus",
        f"postgresql://postgres:{password}@127.0.0.1:5432/x?nope=1",
        f"postgresql://postgres:{password}@127.0.0.1:notaport/x",
    ]
    messages = []
    for url in urls:
        try:
            source = PostgresSource(url)
            with contextlib.suppress(SourceError):
                await source.ping()
            storage = FileStorage(tmp_path)
            await pipeline.take(source, storage, "e/x/1.dump", Log(), no_upload)
        except SourceError as error:
            messages.append(str(error))
    assert len(messages) == len(urls)
    for message in messages:
        assert decoded not in message, message
        assert password not in message, message
    assert files_under(tmp_path) == []


async def test_no_password_in_pg_program_argv(tmp_path: Path) -> None:
    """While pg_dump and pg_restore run, their /proc/<pid>/cmdline holds no secret."""
    name = unique()
    seen: list[str] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        argv = (entry / "cmdline").read_bytes().split(b"\0")
                        if argv and argv[0].endswith((b"pg_dump", b"pg_restore")):
                            seen.append(b" ".join(argv).decode(errors="replace"))
            await asyncio.sleep(0.005)

    with pg_database(
        name,
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 200000) g",
    ):
        watcher = asyncio.create_task(watch())
        try:
            source = PostgresSource(with_password(pg_url(name), ENCODED_PASSWORD))
            storage = FileStorage(tmp_path)
            taken = await pipeline.take(source, storage, "e/p/1.dump", Log(), no_upload)
            await pipeline.drill(
                source,
                storage,
                "e/p/1.dump",
                size=taken.size,
                sha256=taken.sha256,
                row_counts=taken.row_counts,
                smoke_queries=[],
                log=Log(),
            )
        finally:
            stop.set()
            await watcher
    assert any("pg_dump" in argv for argv in seen)
    assert not any("p@ss" in argv or "p%40ss" in argv or "postgresql://" in argv for argv in seen)


# -- concurrency ------------------------------------------------------------------------------


async def test_postgres_promote_while_the_target_is_written_to(tmp_path: Path) -> None:
    """A writer keeps inserting into the target (reconnecting when ended) while a restore
    promotes the scratch database: the restore wins, its rows are the backup's, and no
    scratch or set-aside database is left."""
    name = unique()
    with pg_database(
        name, "CREATE TABLE t (id int)", "INSERT INTO t SELECT generate_series(1, 500)"
    ):
        source = PostgresSource(with_password(pg_url(name), SHORT_PASSWORD))
        storage = FileStorage(tmp_path)
        taken = await pipeline.take(source, storage, "e/w/1.dump", Log(), no_upload)
        stop = asyncio.Event()
        going = asyncio.Event()
        written = refused = 0

        async def writer() -> None:
            nonlocal written, refused
            while not stop.is_set():
                try:
                    async with await psycopg.AsyncConnection.connect(
                        pg_url(name), autocommit=True, connect_timeout=2
                    ) as conn:
                        while not stop.is_set():
                            await conn.execute("INSERT INTO t VALUES (-1)")
                            written += 1
                            if written >= 20:
                                going.set()
                            await asyncio.sleep(0.002)
                except psycopg.Error:
                    refused += 1
                    await asyncio.sleep(0.01)

        writing = asyncio.create_task(writer())
        try:
            await asyncio.wait_for(going.wait(), 10)
            log = Log()
            drilled = await pipeline.drill(
                source,
                storage,
                "e/w/1.dump",
                size=taken.size,
                sha256=taken.sha256,
                row_counts=taken.row_counts,
                smoke_queries=[],
                log=log,
                promote=True,
            )
        finally:
            stop.set()
            await writing
        assert drilled.passed, drilled
        assert any(line.startswith("ended ") for line in log.lines), log.lines
        assert refused >= 1
        with psycopg.connect(pg_url(name), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM t WHERE id > 0").fetchone() == (500,)
        safe = derived_name(name, "x").rsplit("_x_", 1)[0]
        assert pg_names_like(f"{safe}_") == []
        assert admin("SELECT datallowconn FROM pg_database WHERE datname = %s", name) == [(True,)]


async def test_postgres_two_drills_at_once_use_their_own_scratch(tmp_path: Path) -> None:
    name = unique()
    with pg_database(
        name, "CREATE TABLE t (id int)", "INSERT INTO t SELECT generate_series(1, 50)"
    ):
        source = PostgresSource(pg_url(name))
        storage = FileStorage(tmp_path)
        taken = await pipeline.take(source, storage, "e/c/1.dump", Log(), no_upload)
        logs = [Log(), Log()]
        results = await asyncio.gather(
            *(
                pipeline.drill(
                    source,
                    storage,
                    "e/c/1.dump",
                    size=taken.size,
                    sha256=taken.sha256,
                    row_counts=taken.row_counts,
                    smoke_queries=["SELECT * FROM t"],
                    log=log,
                )
                for log in logs
            )
        )
        assert all(result.passed for result in results), results
        assert [r.smoke[0]["rows"] for r in results] == [50, 50]
        safe = derived_name(name, "x").rsplit("_x_", 1)[0]
        assert pg_names_like(f"{safe}_") == []


# -- robustness: sources --------------------------------------------------------------------


async def test_postgres_source_dying_mid_dump_leaves_nothing(tmp_path: Path) -> None:
    name = unique()
    ended: list[int] = []

    async def killer() -> None:
        for _ in range(2000):
            rows = admin(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                name,
                "formula-ops-backup",
            )
            if rows:
                admin("SELECT pg_terminate_backend(%s)", rows[0][0])
                ended.append(rows[0][0])
                return
            await asyncio.sleep(0.002)

    tasks: list[asyncio.Task[None]] = []

    async def log(line: str) -> None:
        if line.startswith("snapshot "):
            tasks.append(asyncio.create_task(killer()))

    with pg_database(
        name,
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 300000) g",
    ):
        source = PostgresSource(with_password(pg_url(name), SHORT_PASSWORD), format="plain")
        storage = FileStorage(tmp_path)
        with pytest.raises(SourceError) as caught:
            await pipeline.take(source, storage, "e/d/1.sql.gz", log, no_upload)
        await asyncio.gather(*tasks)
    assert ended, "pg_dump finished before it could be ended"
    assert pipeline.removed(caught.value)
    assert "pg_dump" in str(caught.value)
    assert SHORT_PASSWORD not in str(caught.value)
    assert files_under(tmp_path) == []


async def test_postgres_dump_does_not_hang_behind_a_waiting_alter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration's ALTER TABLE arrives while the backup's snapshot holds its table: it
    waits for the snapshot, and pg_dump's own lock queues behind it: nothing would ever
    move (and every query of the table would queue too). The dump must give up after its
    lock wait timeout (lowered here) and let the ALTER through."""
    monkeypatch.setattr(postgres_module, "LOCK_WAIT_TIMEOUT_MS", 1000)
    name = unique()
    alters: list[asyncio.Task[None]] = []

    async def alter() -> None:
        async with await psycopg.AsyncConnection.connect(pg_url(name), autocommit=True) as conn:
            await conn.execute("ALTER TABLE t ADD COLUMN later int")

    async def log(line: str) -> None:
        if line.startswith("snapshot "):
            alters.append(asyncio.create_task(alter()))
            await asyncio.sleep(0.3)  # the ALTER is queued behind the snapshot

    with pg_database(name, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1)"):
        source = PostgresSource(pg_url(name))
        storage = FileStorage(tmp_path)
        try:
            with pytest.raises(SourceError, match=r"(?i)lock"):
                await asyncio.wait_for(
                    pipeline.take(source, storage, "e/l/1.dump", log, no_upload), 8
                )
            await asyncio.wait_for(asyncio.gather(*alters), 5)  # the ALTER went through
        finally:
            for task in alters:
                task.cancel()
            await asyncio.gather(*alters, return_exceptions=True)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("content", [b"", b"this is not a database\n" * 100, b"SQLite format 3\0"])
async def test_sqlite_empty_or_foreign_file(tmp_path: Path, content: bytes) -> None:
    database = tmp_path / "odd.db"
    database.write_bytes(content)
    source = SqliteSource(f"sqlite:///{database}")
    storage = FileStorage(tmp_path / "store")
    if content == b"":  # an empty file is an empty database
        taken = await pipeline.take(source, storage, "e/odd/1.db.gz", Log(), no_upload)
        assert taken.row_counts == {}
        assert files_under(tmp_path / "store") == ["e/odd/1.db.gz"]
    else:
        with pytest.raises(SourceError, match="SQLite"):
            await pipeline.take(source, storage, "e/odd/1.db.gz", Log(), no_upload)
        assert files_under(tmp_path / "store") == []
    assert database.read_bytes() == content


# -- robustness: damaged objects ------------------------------------------------------------


async def test_gunzip_of_a_bomb_yields_bounded_chunks() -> None:
    bomb = gzip_module.compress(b"\0" * (256 << 20), compresslevel=9)
    assert len(bomb) < 1 << 20

    async def stored() -> AsyncIterator[bytes]:
        for i in range(0, len(bomb), 64 << 10):
            yield bomb[i : i + (64 << 10)]

    biggest = total = 0
    async for chunk in gunzip(stored()):
        biggest = max(biggest, len(chunk))
        total += len(chunk)
    assert total == 256 << 20
    assert biggest <= 1 << 20


async def test_gunzip_refuses_truncated_and_trailing_bytes() -> None:
    async def once(data: bytes) -> AsyncIterator[bytes]:
        yield data

    whole = b"".join([c async for c in gzip(once(os.urandom(100_000)))])
    for damaged in (whole[:-1], whole[: len(whole) // 2], whole + b"x", b"", b"\x1f\x8b"):
        with pytest.raises(CorruptError):
            async for _ in gunzip(once(damaged)):
                pass


async def test_sqlite_drill_of_a_replaced_bomb_stops_early(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 10})
    source = SqliteSource(f"sqlite:///{database}")
    storage = FileStorage(tmp_path / "store")
    taken = await pipeline.take(source, storage, "e/shop/1.db.gz", Log(), no_upload)
    # Someone with write access to the storage replaces the object by a bomb.
    bomb = gzip_module.compress(b"\0" * (128 << 20), compresslevel=9)
    (tmp_path / "store/e/shop/1.db.gz").write_bytes(bomb)
    biggest = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal biggest
        while not stop.is_set():
            for path in tmp_path.glob(".shop.db.scratch-*"):
                with contextlib.suppress(OSError):
                    biggest = max(biggest, path.stat().st_size)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    try:
        with pytest.raises((pipeline.ReadBackMismatch, SourceError)):
            await pipeline.drill(
                source,
                storage,
                "e/shop/1.db.gz",
                size=taken.size,
                sha256=taken.sha256,
                row_counts=taken.row_counts,
                smoke_queries=[],
                log=Log(),
            )
    finally:
        stop.set()
        await watcher
    # Once more bytes than recorded were read, the load must stop (a few chunks later).
    assert biggest < 16 << 20, f"{biggest} bytes decompressed into the scratch file"


async def test_postgres_drill_of_a_replaced_plain_dump_runs_nothing(tmp_path: Path) -> None:
    name = unique()
    marker = tmp_path / "ran"
    with pg_database(name, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1)"):
        source = PostgresSource(pg_url(name), format="plain")
        storage = FileStorage(tmp_path / "store")
        taken = await pipeline.take(source, storage, "e/p/1.sql.gz", Log(), no_upload)
        # Someone with write access to the storage replaces the object.
        evil = gzip_module.compress(f"\\! touch {marker}\n".encode())
        (tmp_path / "store/e/p/1.sql.gz").write_bytes(evil)
        with pytest.raises((pipeline.ReadBackMismatch, SourceError)):
            await pipeline.drill(
                source,
                storage,
                "e/p/1.sql.gz",
                size=taken.size,
                sha256=taken.sha256,
                row_counts=taken.row_counts,
                smoke_queries=[],
                log=Log(),
            )
    assert not marker.exists(), "a shell command of the replaced object ran"


async def test_s3_errors_carry_no_credentials(
    moto_s3: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Hostile-Secret-Key-0123456789"
    storages = [
        # A bucket that does not exist, and a server that is not there.
        moto_s3.storage(f"s3://fo-missing-{uuid.uuid4().hex[:12]}/p", secret_key=secret),
        S3Storage.from_url(
            "s3://fo-nowhere/p",
            endpoint_url="http://127.0.0.1:1",
            access_key="AKIAHOSTILEACCESS01",
            secret_key=secret,
            region="us-east-1",
        ),
    ]
    messages = []
    for storage in storages:
        with pytest.raises(StorageError) as caught:
            await storage.open_writer("e/db/1.dump")
        messages.append(str(caught.value))
        with pytest.raises(StorageError) as caught:
            async for _ in storage.read("e/db/1.dump"):
                pass
        messages.append(str(caught.value))
        with pytest.raises(StorageError) as caught:
            await storage.partials(dt.timedelta(0))
        messages.append(str(caught.value))
    for text in [*messages, caplog.text]:
        assert secret not in text
        assert "AKIAHOSTILEACCESS01" not in text
        assert "Signature=" not in text


async def test_drill_of_a_truncated_object_fails_cleanly(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 2000})
    source = SqliteSource(f"sqlite:///{database}")
    storage = FileStorage(tmp_path / "store")
    taken = await pipeline.take(source, storage, "e/shop/1.db.gz", Log(), no_upload)
    stored = tmp_path / "store/e/shop/1.db.gz"
    stored.write_bytes(stored.read_bytes()[: taken.size // 2])
    # Found while fetching, before anything is loaded.
    with pytest.raises(pipeline.ReadBackMismatch, match="changed"):
        await pipeline.drill(
            source,
            storage,
            "e/shop/1.db.gz",
            size=taken.size,
            sha256=taken.sha256,
            row_counts=taken.row_counts,
            smoke_queries=[],
            log=Log(),
            promote=True,
        )
    assert [p.name for p in tmp_path.iterdir() if ".scratch-" in p.name] == []
    with pytest.raises(pipeline.ReadBackMismatch):
        await pipeline.verify_object(storage, "e/shop/1.db.gz", taken.size, taken.sha256)


# -- the service: rows, events, partial uploads -------------------------------------------------


async def add_environment(context: AppContext, name: str, url: str) -> None:
    async with context.unit_of_work() as uow:
        uow.session.add(
            Environment(name=name, database="shop", database_url=url, backup_smoke_queries=[])
        )


async def prepared(context: AppContext, environment: str) -> str:
    async with context.unit_of_work() as uow:
        backup = await backups.prepare(
            uow.session,
            context,
            environment=environment,
            run_id=new_id(),
            origin=BackupOrigin.REQUEST,
        )
        return backup.id


async def events_of(context: AppContext, backup_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with context.unit_of_work() as uow:
        rows = await uow.session.scalars(select(OutboxEvent).order_by(OutboxEvent.created_at))
        return [(e.type, e.data) for e in rows if e.data.get("backup_id") == backup_id]


def stored_files(context: AppContext, backup: Backup) -> list[str]:
    """The files of ``backup``'s object in the test session's storage folder (its
    object and any partial upload of it)."""
    root = Path(context.settings.storage_url_value.removeprefix("file://"))
    return [name for name in files_under(root) if name.startswith(backup.object_key)]


async def row(context: AppContext, backup_id: str) -> Backup:
    async with context.unit_of_work() as uow:
        found = await uow.session.get(Backup, backup_id)
        assert found is not None
        return found


@SQLITE_ONLY
async def test_service_failure_redacts_the_password_everywhere(
    context: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    decoded = "p@ss-Hostile-91"
    await add_environment(
        context, "hostile", f"postgresql://postgres:{ENCODED_PASSWORD}@127.0.0.1:1/shop"
    )
    backup_id = await prepared(context, "hostile")
    log = Log()
    ended = await backups.perform(context, backup_id, log)
    assert ended.status == BackupStatus.FAILURE.value
    assert ended.error
    ours = [caplog.format(r) for r in caplog.records if r.name.startswith("app")]
    texts = [ended.error, ended.storage_url, *log.lines, *ours]
    texts += [repr(data) for _, data in await events_of(context, backup_id)]
    for text in texts:
        assert decoded not in text, text
        assert ENCODED_PASSWORD not in text, text
    assert [t for t, _ in await events_of(context, backup_id)] == ["backup.failed"]


@SQLITE_ONLY
async def test_service_perform_never_leaves_in_progress_on_a_broken_storage(
    context: AppContext, tmp_path: Path
) -> None:
    """The storage folder cannot be made (its parent is a file): the backup fails, with
    the reason, and nothing raises."""
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 5})
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    broken = build_context(
        context.settings.model_copy(update={"storage_url": (blocker / "store").as_uri()})
    )
    try:
        await add_environment(broken, "hostile", f"sqlite:///{database}")
        backup_id = await prepared(broken, "hostile")
        ended = await backups.perform(broken, backup_id, Log())
    finally:
        await broken.aclose()
    assert ended.status == BackupStatus.FAILURE.value
    assert ended.error
    assert "blocker" in ended.error


@SQLITE_ONLY
async def test_service_perform_with_a_misconfigured_storage_fails_the_backup(
    context: AppContext, tmp_path: Path
) -> None:
    """The storage URL became unusable between prepare and perform: perform must end the
    backup ``failure``, not raise and leave it ``in_progress``."""
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 5})
    await add_environment(context, "hostile", f"sqlite:///{database}")
    backup_id = await prepared(context, "hostile")
    broken = build_context(context.settings.model_copy(update={"storage_url": "ftp://nowhere/x"}))
    try:
        ended = await backups.perform(broken, backup_id, Log())
        assert ended.status == BackupStatus.FAILURE.value
        assert ended.error
        assert "storage URL" in ended.error
        with pytest.raises(backups.BackupError):
            await prepared(broken, "hostile")
    finally:
        await broken.aclose()


@SQLITE_ONLY
async def test_service_perform_of_a_finished_backup_changes_nothing(
    context: AppContext, tmp_path: Path
) -> None:
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 5})
    await add_environment(context, "hostile", f"sqlite:///{database}")
    backup_id = await prepared(context, "hostile")
    first = await backups.perform(context, backup_id, Log())
    assert first.status == BackupStatus.SUCCESS.value
    stored = Path(first.storage_url.removeprefix("file://"))
    before = stored.read_bytes()
    make_sqlite(tmp_path / "other.db", {})
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO t (note) VALUES ('later')")
    again = await backups.perform(context, backup_id, Log())
    assert (again.status, again.sha256, again.row_counts) == (
        first.status,
        first.sha256,
        first.row_counts,
    )
    assert stored.read_bytes() == before
    assert [t for t, _ in await events_of(context, backup_id)] == ["backup.succeeded"]


@SQLITE_ONLY
async def test_service_perform_of_a_failed_backup_does_not_resurrect_it(
    context: AppContext, tmp_path: Path
) -> None:
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 5})
    await add_environment(context, "hostile", f"sqlite:///{database}")
    backup_id = await prepared(context, "hostile")
    async with context.unit_of_work() as uow:
        found = await uow.session.get(Backup, backup_id, with_for_update=True)
        assert found is not None
        await backups.mark_failed(uow.session, found, "its worker stopped")
    ended = await backups.perform(context, backup_id, Log())
    assert ended.status == BackupStatus.FAILURE.value
    assert stored_files(context, ended) == []
    assert [t for t, _ in await events_of(context, backup_id)] == ["backup.failed"]


@SQLITE_ONLY
async def test_service_backup_failed_while_it_ran_stays_failed(
    context: AppContext, tmp_path: Path
) -> None:
    """``supersede``/``settle_interrupted`` fail a backup whose worker looked dead; if
    that worker was only slow, its late success must not overwrite the failure (and
    its object must not stay behind)."""
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 5})
    await add_environment(context, "hostile", f"sqlite:///{database}")
    backup_id = await prepared(context, "hostile")
    backup = await row(context, backup_id)

    async def log(line: str) -> None:
        if line.startswith("dumped "):
            await backups.supersede(context, backup.run_id)

    ended = await backups.perform(context, backup_id, log)
    assert ended.status == BackupStatus.FAILURE.value
    assert [t for t, _ in await events_of(context, backup_id)] == ["backup.failed"]
    assert stored_files(context, ended) == []
    assert ended.upload_id is None


@SQLITE_ONLY
async def test_service_two_performs_of_one_backup(context: AppContext, tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 500})
    await add_environment(context, "hostile", f"sqlite:///{database}")
    backup_id = await prepared(context, "hostile")
    results = await asyncio.gather(
        backups.perform(context, backup_id, Log()), backups.perform(context, backup_id, Log())
    )
    ended = await row(context, backup_id)
    assert ended.status == BackupStatus.SUCCESS.value, [r.error for r in results]
    kinds = [t for t, _ in await events_of(context, backup_id)]
    assert kinds == ["backup.succeeded"], kinds
    storage = backups.storage(context)
    await pipeline.verify_object(
        storage, ended.object_key, ended.size_bytes or 0, ended.sha256 or ""
    )
    assert stored_files(context, ended) == [ended.object_key]
    assert ended.upload_id is None


@SQLITE_ONLY
async def test_clean_partials_spares_live_uploads_and_objects(
    context: AppContext, tmp_path: Path
) -> None:
    storage = backups.storage(context)
    storage_root = Path(context.settings.storage_url_value.removeprefix("file://"))
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 5})
    await add_environment(context, "hostile", f"sqlite:///{database}")
    # A completed backup, a live (old-looking) upload of an in_progress backup, a failed
    # backup's partial upload, and an unknown old partial.
    done_id = await prepared(context, "hostile")
    done = await backups.perform(context, done_id, Log())
    assert done.status == BackupStatus.SUCCESS.value
    live_id = await prepared(context, "hostile")
    live = await row(context, live_id)
    live_writer = await storage.open_writer(live.object_key)
    await live_writer.write(b"still writing")
    failed_id = await prepared(context, "hostile")
    failed = await row(context, failed_id)
    failed_writer = await storage.open_writer(failed.object_key)
    await failed_writer.write(b"left over")
    async with context.unit_of_work() as uow:
        for backup_id, upload_id in (
            (live_id, live_writer.upload_id),
            (failed_id, failed_writer.upload_id),
        ):
            found = await uow.session.get(Backup, backup_id, with_for_update=True)
            assert found is not None
            found.upload_id = upload_id
        found = await uow.session.get(Backup, failed_id, with_for_update=True)
        assert found is not None
        await backups.mark_failed(uow.session, found, "it failed")
    stray_writer = await storage.open_writer("hostile/shop/stray.db.gz")
    await stray_writer.write(b"stray")
    old = 1_000_000_000  # 2001: older than any grace
    for path in storage_root.rglob("*.partial"):
        os.utime(path, (old, old))
    removed = await backups.clean_partials(context)
    assert removed == 2
    left = files_under(storage_root)
    assert done.object_key in left
    assert any(name.endswith(live_writer.upload_id) for name in left)
    assert not any(name.endswith(failed_writer.upload_id) for name in left)
    assert not any("stray" in name for name in left)
    await live_writer.abort()
    assert (await row(context, failed_id)).upload_id is None


@SQLITE_ONLY
async def test_two_backups_of_one_run_never_share_an_object(
    context: AppContext, tmp_path: Path
) -> None:
    database = tmp_path / "shop.db"
    make_sqlite(database, {"t": 5})
    await add_environment(context, "hostile", f"sqlite:///{database}")
    run_id = new_id()
    for _ in range(3):  # two in the same second (a second's boundary may fall between)
        keys = []
        async with context.unit_of_work() as uow:
            for _ in range(2):
                backup = await backups.prepare(
                    uow.session,
                    context,
                    environment="hostile",
                    run_id=run_id,
                    origin=BackupOrigin.DEPLOYMENT,
                )
                keys.append(backup.object_key)
        if keys[0][:-40] == keys[1][:-40]:  # the same timestamp
            break
    assert keys[0] != keys[1]


async def test_s3_upload_of_a_failed_take_is_aborted(moto_s3: S3Server, tmp_path: Path) -> None:
    """The source fails once the multipart upload exists (a file that is not a database
    is refused when copied): no object and no multipart upload remain."""
    bucket = moto_s3.create_bucket()
    storage = moto_s3.storage(f"s3://{bucket}/root")
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"not a database at all\n" * 1000)
    with pytest.raises(SourceError) as caught:
        await pipeline.take(
            SqliteSource(f"sqlite:///{foreign}"), storage, "e/f/1.db.gz", Log(), no_upload
        )
    assert pipeline.removed(caught.value)
    client = moto_s3.client()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # A stored object that is read back different (replaced in the bucket) is found.
    good = tmp_path / "good.db"
    make_sqlite(good, {"t": 3})
    taken = await pipeline.take(
        SqliteSource(f"sqlite:///{good}"), storage, "e/g/1.db.gz", Log(), no_upload
    )
    client.put_object(Bucket=bucket, Key="root/e/g/1.db.gz", Body=b"x" * taken.size)
    with pytest.raises(pipeline.ReadBackMismatch):
        await pipeline.verify_object(storage, "e/g/1.db.gz", taken.size, taken.sha256)
