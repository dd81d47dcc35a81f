"""The backup sources on the real engines: PostgreSQL of this machine (``pg_dump``,
``pg_restore``, ``psql``) and SQLite files. Each test dumps a database of its own
through gzip and hashing into a :class:`~app.backups.storage.FileStorage`, reads the
object back into a scratch database and compares the exact row counts."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from app.backups.postgres import PostgresSource, dump_argv, restore_argv
from app.backups.sources import Source, SourceError
from app.backups.sqlite import SqliteSource
from app.backups.storage import FileStorage
from app.backups.stream import CorruptError, Digest, gunzip, gzip
from app.backups.targets import source_for
from tests.helpers import PG_ADMIN_URL, create_pg_database, drop_pg_database, pg_url

pytestmark = pytest.mark.slow

PASSWORD = "Very-Secret-pw-7319"
SETUP = [
    "CREATE TABLE orders (id bigserial PRIMARY KEY, note text NOT NULL)",
    "INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 10000) g",
    'CREATE TABLE "MixedCase" (id int PRIMARY KEY, "Label" text)',
    """INSERT INTO "MixedCase" SELECT g, 'label ' || g FROM generate_series(1, 37) g""",
    'CREATE TABLE "we""ird name" (id int)',
    'INSERT INTO "we""ird name" SELECT generate_series(1, 5)',
    'CREATE SCHEMA "Sales"',
    'CREATE TABLE "Sales".items (sku text PRIMARY KEY, order_id bigint REFERENCES orders (id))',
    """INSERT INTO "Sales".items SELECT 'sku-' || g, g FROM generate_series(1, 120) g""",
    "CREATE TABLE empty_one (id int)",
    "CREATE TABLE events (id int, at date) PARTITION BY RANGE (at)",
    "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "INSERT INTO events SELECT g, date '2025-06-01' + g % 400 FROM generate_series(1, 3000) g",
    "CREATE VIEW order_notes AS SELECT note FROM orders",
    "ANALYZE",
]
EXPECTED = {
    "Sales.items": 120,
    "public.MixedCase": 37,
    "public.empty_one": 0,
    "public.events": 3000,
    "public.orders": 10000,
    'public.we"ird name': 5,
}


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)


def pg_exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            is not None
        )


def pg_names_like(prefix: str) -> list[str]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix]
        ).fetchall()
    return [row[0] for row in rows]


def with_password(url: str, user: str = "postgres") -> str:
    return url.replace("postgresql://postgres@", f"postgresql://{user}:{PASSWORD}@", 1)


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A filled database of this test's own (dropped afterwards, with what a failed test
    may have left beside it)."""
    name = f"bk_src_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SETUP:
            conn.execute(statement)  # type: ignore[arg-type]
    yield url
    for leftover in [name, *pg_names_like(f"{name}_")]:
        drop_pg_database(leftover)


async def backup(source: Source, storage: FileStorage, key: str) -> tuple[dict[str, int], str]:
    """Dump → gzip (when the format wants it) → hash → storage; the dump's row counts
    and the stored object's SHA-256."""
    async with source.dump(Log()) as dump:
        digest = Digest()
        body = gzip(dump.chunks) if source.compress else dump.chunks
        writer = await storage.open_writer(key)
        try:
            async for chunk in digest.tap(body):
                await writer.write(chunk)
            await dump.finished()
        except BaseException:
            await writer.abort()
            raise
        await writer.complete()
    return dump.row_counts, digest.sha256


def stored(source: Source, storage: FileStorage, key: str) -> AsyncIterator[bytes]:
    chunks = storage.read(key)
    return gunzip(chunks) if source.compress else chunks


async def sha_of(storage: FileStorage, key: str) -> str:
    digest = Digest()
    async for _ in digest.tap(storage.read(key)):
        pass
    return digest.sha256


async def from_bytes(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def children_named(program: str) -> list[int]:
    """This process's child processes running ``program``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and comm == program:
            found.append(int(entry.name))
    return found


def proc_file(pid: int, name: str) -> list[bytes]:
    """``/proc/<pid>/<name>`` split at NUL bytes; empty when the process is gone."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().split(b"\0")
    except FileNotFoundError:
        return []


def files_starting(folder: Path, prefix: str) -> list[str]:
    return [path.name for path in folder.iterdir() if path.name.startswith(prefix)]


async def program_argv(pid: int, program: bytes) -> list[bytes]:
    """The command line of ``pid`` once it runs ``program`` itself (Debian's
    ``/usr/bin/pg_dump`` is a Perl wrapper that then executes the real one)."""
    for _ in range(500):
        argv = proc_file(pid, "cmdline")
        if argv[0].rpartition(b"/")[2] == program:
            return argv
        await asyncio.sleep(0.01)
    raise AssertionError(f"{pid} never ran {program!r}: {argv}")


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["custom", "plain"])
async def test_pg_round_trip(pg_db: str, tmp_path: Path, fmt: str) -> None:
    source = source_for(pg_db, pg_format=fmt)
    assert isinstance(source, PostgresSource)
    assert (source.engine, source.database, source.format) == (
        "postgresql",
        pg_db.rpartition("/")[2],
        fmt,
    )
    assert (source.extension, source.compress) == (
        (".dump", False) if fmt == "custom" else (".sql.gz", True)
    )
    await source.ping()
    storage = FileStorage(tmp_path / "store")
    key = f"prod/{source.database}/backup{source.extension}"
    counts, sha = await backup(source, storage, key)
    assert counts == EXPECTED
    assert await sha_of(storage, key) == sha
    head = b""
    async for chunk in stored(source, storage, key):
        head = chunk[:5]
        break
    assert head == b"PGDMP" if fmt == "custom" else head == b"--\n--"

    log = Log()
    async with source.scratch(log) as scratch:
        assert scratch.name.startswith(f"{source.database}_scratch_")
        assert len(scratch.name.encode()) <= 63
        assert pg_exists(scratch.name)
        await scratch.load(stored(source, storage, key))
        assert await scratch.row_counts([*counts, "public.missing"]) == {
            **EXPECTED,
            "public.missing": -1,
        }
        assert await scratch.query("SELECT * FROM order_notes WHERE note LIKE 'order 1%'") == 1112
        assert await scratch.query('SELECT "Label" FROM "MixedCase"') == 37
        name = scratch.name
    assert not pg_exists(name)
    assert any("dropped the scratch database" in line for line in log.lines)


async def test_pg_counts_the_largest_tables(pg_db: str) -> None:
    """By size on disk, a partitioned table by its partitions' (never listed apart)."""
    async with PostgresSource(pg_db, largest_tables=2).dump(Log()) as dump:
        assert dump.row_counts == {"public.events": 3000, "public.orders": 10000}
        async for _ in dump.chunks:
            pass
        await dump.finished()


async def test_pg_smoke_query_is_read_only_and_errors_are_source_errors(pg_db: str) -> None:
    source = PostgresSource(pg_db)
    async with source.scratch(Log()) as scratch:
        with pytest.raises(SourceError, match="read-only transaction"):
            await scratch.query("CREATE TABLE sneaky (id int)")
        with pytest.raises(SourceError, match="does not exist"):
            await scratch.query("SELECT * FROM nowhere")
        with pytest.raises(SourceError, match="smoke query failed"):
            await scratch.query("SELECT 1; DROP DATABASE postgres")
        assert await scratch.query("SELECT 1 UNION ALL SELECT 2") == 2


async def test_pg_counts_come_from_the_dumps_snapshot(pg_db: str, tmp_path: Path) -> None:
    """Rows inserted while the dump runs are neither counted nor dumped."""
    source = PostgresSource(pg_db, largest_tables=1)
    inserted = 0
    wanted = 20
    enough = asyncio.Event()
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal inserted
        async with await psycopg.AsyncConnection.connect(pg_db, autocommit=True) as conn:
            while not stop.is_set():
                await conn.execute("INSERT INTO orders (note) VALUES ('during the dump')")
                inserted += 1
                if inserted >= wanted:
                    enough.set()

    task = asyncio.create_task(writer())
    try:
        await enough.wait()
        storage = FileStorage(tmp_path)
        async with source.dump(Log()) as dump:
            wanted = inserted + 50
            enough.clear()
            digest = Digest()
            writer_object = await storage.open_writer("k/db/b.dump")
            async for chunk in digest.tap(dump.chunks):
                await writer_object.write(chunk)
                await asyncio.sleep(0.01)  # the writer goes on meanwhile
            await enough.wait()
            await dump.finished()
            await writer_object.complete()
    finally:
        stop.set()
        await task
    counted = dump.row_counts["public.orders"]
    assert list(dump.row_counts) == ["public.orders"]  # the largest table only
    assert 10020 <= counted < 10000 + inserted
    async with await psycopg.AsyncConnection.connect(pg_db) as conn:
        row = await (await conn.execute("SELECT count(*) FROM orders")).fetchone()
        assert row == (10000 + inserted,)
    async with source.scratch(Log()) as scratch:
        await scratch.load(storage.read("k/db/b.dump"))
        assert await scratch.row_counts(["public.orders"]) == {"public.orders": counted}


async def test_pg_dump_of_a_missing_database_fails(pg_db: str) -> None:
    source = PostgresSource(pg_url(f"bk_missing_{uuid.uuid4().hex[:8]}"))
    with pytest.raises(SourceError, match="does not exist"):
        await source.ping()
    with pytest.raises(SourceError, match="does not exist"):
        async with source.dump(Log()):
            pytest.fail("no dump of a missing database")


async def test_pg_dump_killed_or_not_read_fails(pg_db: str) -> None:
    source = PostgresSource(pg_db)
    async with source.dump(Log()) as dump:
        (pid,) = children_named("pg_dump")
        os.kill(pid, signal.SIGKILL)
        async for _ in dump.chunks:
            pass
        with pytest.raises(SourceError, match="pg_dump was killed by signal 9"):
            await dump.finished()
    async with source.dump(Log()) as dump:
        with pytest.raises(SourceError, match="not read to its end"):
            await dump.finished()
    async with source.dump(Log()) as dump:
        (pid,) = children_named("pg_dump")
    # Left unread: the context's end killed it and waited for it.
    assert not proc_file(pid, "cmdline")
    assert children_named("pg_dump") == []


@pytest.mark.parametrize("fmt", ["custom", "plain"])
async def test_pg_corrupt_dump_fails_and_scratch_is_dropped(
    pg_db: str, tmp_path: Path, fmt: str
) -> None:
    source = PostgresSource(pg_db, format=fmt)
    storage = FileStorage(tmp_path)
    await backup(source, storage, f"k/db/b{source.extension}")
    data = bytearray()
    async for chunk in stored(source, storage, f"k/db/b{source.extension}"):
        data += chunk
    if fmt == "custom":  # the middle of the compressed table data
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    else:  # a statement that is not SQL
        cut = data.index(b"CREATE TABLE")
        data[cut:cut] = b"CREATE TABEL broken (id int);\n"
    names = []
    async with source.scratch(Log()) as scratch:
        names.append(scratch.name)
        with pytest.raises(SourceError, match="failed with exit code") as caught:
            await scratch.load(from_bytes(bytes(data)))
    assert not pg_exists(names[0])
    program = "pg_restore" if fmt == "custom" else "psql"
    assert str(caught.value).startswith(f"{program} failed with exit code")
    if fmt == "plain":
        assert 'syntax error at or near "TABEL"' in str(caught.value)

    if fmt == "plain":  # the stored gzip itself damaged: the stream says so, no scratch left
        raw = bytearray()
        async for chunk in storage.read(f"k/db/b{source.extension}"):
            raw += chunk
        raw[len(raw) // 2] ^= 0xFF
        with pytest.raises(CorruptError):
            async with source.scratch(Log()) as scratch:
                names.append(scratch.name)
                await scratch.load(gunzip(from_bytes(bytes(raw))))
        assert not pg_exists(names[1])


@pytest.mark.parametrize("fmt", ["custom", "plain"])
async def test_pg_promote_replaces_the_target(pg_db: str, tmp_path: Path, fmt: str) -> None:
    source = PostgresSource(pg_db, format=fmt)
    storage = FileStorage(tmp_path)
    key = f"k/db/b{source.extension}"
    await backup(source, storage, key)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute('DELETE FROM "Sales".items; DELETE FROM orders WHERE id > 100')
        conn.execute("CREATE TABLE added_later (id int)")
    holder = await psycopg.AsyncConnection.connect(pg_db, autocommit=True)  # a session on it
    log = Log()
    async with source.scratch(log) as scratch:
        await scratch.load(stored(source, storage, key))
        scratch_name = scratch.name
        await scratch.promote()
        assert scratch.name == source.database
    assert not pg_exists(scratch_name)
    assert pg_names_like(f"{source.database}_") == []  # the former target is gone
    with pytest.raises(psycopg.OperationalError):
        await holder.execute("SELECT 1")
    await holder.close()
    with psycopg.connect(pg_db, autocommit=True) as conn:
        for table, expected in EXPECTED.items():
            schema, _, name = table.partition(".")
            query = psycopg.sql.SQL("SELECT count(*) FROM {}.{}").format(
                psycopg.sql.Identifier(schema), psycopg.sql.Identifier(name)
            )
            assert conn.execute(query).fetchone() == (expected,), table
        assert conn.execute("SELECT to_regclass('added_later')").fetchone() == (None,)
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba), datallowconn FROM pg_database WHERE datname = %s",
            [source.database],
        ).fetchone()
        assert row == ("postgres", True)
    assert any("ended 1 session(s)" in line for line in log.lines), log.lines


async def test_pg_promote_refused_leaves_the_target(pg_db: str, tmp_path: Path) -> None:
    """A role that may create databases but does not own the target cannot replace it."""
    role = f"bk_src_role_{uuid.uuid4().hex[:8]}"
    ident = psycopg.sql.Identifier(role)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(ident))
    try:
        with psycopg.connect(pg_db, autocommit=True) as conn:
            for grant in (
                'GRANT USAGE ON SCHEMA "Sales" TO {}',
                'GRANT SELECT ON ALL TABLES IN SCHEMA public, "Sales" TO {}',
                "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {}",
            ):
                conn.execute(psycopg.sql.SQL(grant).format(ident))  # type: ignore[arg-type]
        source = PostgresSource(with_password(pg_db, role))
        storage = FileStorage(tmp_path)
        await backup(source, storage, "k/db/b.dump")
        async with source.scratch(Log()) as scratch:
            await scratch.load(storage.read("k/db/b.dump"))
            with pytest.raises(SourceError, match="must be owner of database") as caught:
                await scratch.promote()
            name = scratch.name
        assert str(caught.value).startswith(f"could not close {source.database} to new")
        assert PASSWORD not in str(caught.value)
        assert not pg_exists(name)
        with psycopg.connect(pg_db, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (10000,)
    finally:
        with psycopg.connect(pg_db, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(ident))
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for leftover in pg_names_like(f"{pg_db.rpartition('/')[2]}_"):
                conn.execute(
                    psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        psycopg.sql.Identifier(leftover)
                    )
                )
            conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(ident))


async def test_pg_password_only_in_the_environment(pg_db: str, tmp_path: Path) -> None:
    """Trust authentication accepts any password: the one in the URL reaches pg_dump,
    through its environment and never its command line."""
    url = with_password(pg_db)
    source = PostgresSource(url.replace("postgresql://", "postgresql+psycopg://"))
    log = Log()
    async with source.dump(log) as dump:
        (pid,) = children_named("pg_dump")
        argv = await program_argv(pid, b"pg_dump")
        environ = proc_file(pid, "environ")
        async for _ in dump.chunks:
            pass
        await dump.finished()
    assert any(a.startswith(b"--snapshot=") for a in argv)
    assert not any(PASSWORD.encode() in a or b"postgresql://" in a for a in argv), argv
    assert f"PGPASSWORD={PASSWORD}".encode() in environ
    assert f"PGDATABASE={source.database}".encode() in environ
    assert not any(a.startswith(b"FORMULA_OPS_") for a in environ)
    assert PASSWORD not in " ".join(log.lines)
    for argv_built in (dump_argv("00000003-1", "custom"), restore_argv("plain", "x")):
        assert not any(PASSWORD in a or "@" in a for a in argv_built)

    # Refused: a role that does not exist, with a password; no message shows it.
    stranger = PostgresSource(with_password(pg_db, "bk_no_such_role"))
    for attempt in ("ping", "dump", "scratch"):
        with pytest.raises(SourceError) as caught:
            if attempt == "ping":
                await stranger.ping()
            elif attempt == "dump":
                async with stranger.dump(Log()):
                    pass
            else:
                async with stranger.scratch(Log()):
                    pass
        assert 'role "bk_no_such_role" does not exist' in str(caught.value)
        assert PASSWORD not in str(caught.value)
    # Whatever a program printed is scrubbed of the password and of URL userinfo.
    error = stranger.error("psql failed", RuntimeError(f"bad {PASSWORD} in {url}"))
    assert PASSWORD not in str(error)
    assert "[redacted]" in str(error)


def test_pg_url_forms() -> None:
    source = PostgresSource("postgresql+psycopg://u:p%40ss@db.example:6543/shop?sslmode=require")
    assert source.database == "shop"
    env = source.target.env()
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGPASSWORD"]) == (
        "db.example",
        "6543",
        "u",
        "p@ss",
    )
    assert env["PGSSLMODE"] == "require"
    for bad in ("postgresql://h/", "mysql://h/db", "postgresql://h/db?options=-c%20x"):
        with pytest.raises(SourceError):
            PostgresSource(bad)
    with pytest.raises(SourceError):
        PostgresSource("postgresql://h/db", format="tar")


# -- SQLite --------------------------------------------------------------------------------


def make_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        """
        CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 10000)
        INSERT INTO orders (note) SELECT 'order ' || n FROM g;
        CREATE TABLE "MixedCase" (id INTEGER PRIMARY KEY);
        INSERT INTO "MixedCase" VALUES (1), (2), (3);
        CREATE TABLE "we""ird name" (id INTEGER);
        INSERT INTO "we""ird name" VALUES (1), (2);
        """
    )
    conn.commit()
    return conn


SQLITE_EXPECTED = {"MixedCase": 3, "orders": 10000, 'we"ird name': 2}


async def test_sqlite_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    make_sqlite(path).close()
    source = source_for(f"sqlite:///{path}")
    assert isinstance(source, SqliteSource)
    storage = FileStorage(tmp_path / "store")
    counts, sha = await backup(source, storage, "k/app/b.db.gz")
    assert counts == SQLITE_EXPECTED
    assert await sha_of(storage, "k/app/b.db.gz") == sha
    async with source.scratch(Log()) as scratch:
        await scratch.load(stored(source, storage, "k/app/b.db.gz"))
        assert await scratch.row_counts([*counts, "missing"]) == {**SQLITE_EXPECTED, "missing": -1}
        assert await scratch.query("SELECT * FROM orders WHERE id <= 7") == 7
        with pytest.raises(SourceError, match="smoke query failed"):
            await scratch.query("SELECT * FROM nowhere")
        scratch_path = tmp_path / scratch.name
        assert scratch_path.exists()
    assert not files_starting(tmp_path, scratch.name)


async def test_sqlite_corrupt_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    make_sqlite(path).close()
    source = SqliteSource(f"sqlite:///{path}")
    storage = FileStorage(tmp_path / "store")
    await backup(source, storage, "k/app/b.db.gz")
    data = bytearray()
    async for chunk in stored(source, storage, "k/app/b.db.gz"):
        data += chunk
    data[:16] = bytes(b ^ 0xFF for b in data[:16])  # the header's magic string
    async with source.scratch(Log()) as scratch:
        with pytest.raises(SourceError, match="not a SQLite database"):
            await scratch.load(from_bytes(bytes(data)))
        name = scratch.name
    assert not (tmp_path / name).exists()


async def test_sqlite_promote_with_an_open_wal_connection(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    holder = make_sqlite(path)  # stays open, in WAL mode, through the restore
    try:
        source = SqliteSource(f"sqlite:///{path}")
        storage = FileStorage(tmp_path / "store")
        counts, _ = await backup(source, storage, "k/app/b.db.gz")
        holder.execute("DELETE FROM orders WHERE id > 10")
        holder.execute("CREATE TABLE added_later (id INTEGER)")
        holder.commit()
        assert holder.execute("SELECT count(*) FROM orders").fetchone() == (10,)
        async with source.scratch(Log()) as scratch:
            await scratch.load(stored(source, storage, "k/app/b.db.gz"))
            await scratch.promote()
        assert holder.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert holder.execute("SELECT count(*) FROM orders").fetchone() == (10000,)
        tables = {row[0] for row in holder.execute("SELECT name FROM sqlite_master")}
        assert "added_later" not in tables
        assert holder.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert counts == SQLITE_EXPECTED
    finally:
        holder.close()
