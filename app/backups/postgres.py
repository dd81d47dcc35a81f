"""PostgreSQL databases: dumped by ``pg_dump`` from a snapshot whose exact row counts
are taken first, restored by ``pg_restore`` (custom format) or ``psql`` (plain SQL) into
a scratch database on the same server, which a restore then renames over its target.

Secrets: the URL's password goes to the programs only in their environment
(``PGPASSWORD``, beside ``PGHOST``/``PGPORT``/``PGUSER``/``PGDATABASE``); no argv holds a
URL or a password, and every error message is redacted
(:func:`app.core.redaction.redact_text`) and scrubbed of the password's value.

Rights the URL's role needs:

- a dump: ``SELECT`` on every table (``pg_dump``'s own rule);
- a drill: ``CREATEDB`` (the scratch database is created and dropped by it);
- a restore (:meth:`_Scratch.promote`): owning the target database (or being a
  superuser) and being allowed to end the other sessions on it (a superuser, the same
  role, or a member of ``pg_signal_backend``), and a connection to the server's
  ``postgres`` database (a database cannot be renamed while connected to it). Without
  them, :meth:`_Scratch.promote` raises :class:`SourceError` naming the step that was
  refused (for instance ``must be owner of database shop``), the target is left as it
  was (open to connections again) and the scratch database is dropped when its context
  ends. After a restore the database (and, ``--no-owner``, every object in it) belongs
  to the URL's role; the target's former owner is given the database back when the
  role may do so (otherwise the log says it was not).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg import sql

from app.backups.sources import Dump, LogLine, SourceError
from app.core.child_env import child_env
from app.core.redaction import Scrubber

CHUNK = 1 << 20  # bytes per read of pg_dump's output (and the pipe buffer's bound)
STDERR_TAIL = 4000  # characters of a program's stderr kept for its error message
CONNECT_TIMEOUT = 10  # s
PING_TIMEOUT = 5  # s
QUERY_TIMEOUT_MS = 60_000  # statement_timeout of a smoke query
# How long a dump waits for a table's lock (its row counts and pg_dump's own): behind a
# waiting ALTER TABLE it would wait forever, and the ALTER (and every query queued
# behind it) for the dump.
LOCK_WAIT_TIMEOUT_MS = 30_000
MAX_IDENTIFIER = 63  # bytes: PostgreSQL's NAMEDATALEN - 1
MAINTENANCE_DATABASE = "postgres"
FORCE_DROP_VERSION = 130000  # DROP DATABASE … WITH (FORCE)
RENAME_ATTEMPTS = 5
FORMATS = ("custom", "plain")
# libpq connection parameters a URL may carry in its query, and their variables.
_PARAMETERS = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "application_name": "PGAPPNAME",
}
_USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
"""

# A table's size on disk with its indexes and TOAST; a partitioned table's, its partitions'.
_SIZE = (
    "(CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)"
    " FROM pg_partition_tree(c.oid)) ELSE pg_total_relation_size(c.oid) END)"
)


@dataclass(frozen=True)
class PgTarget:
    """Where a database is, as the parts of its URL."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    parameters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str) -> PgTarget:
        """``postgresql://user:password@host:port/name`` (also ``postgres://`` and
        ``postgresql+<driver>://``), with optional ``?sslmode=…`` and the like."""
        try:
            parts = urlsplit(url)
            port = parts.port or 5432
        except ValueError:
            raise SourceError("not a valid PostgreSQL URL") from None
        if parts.scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
            raise SourceError("a PostgreSQL URL is postgresql://user:password@host:port/name")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise SourceError("a PostgreSQL URL names its database: postgresql://…/name")
        # The server truncates a longer name (on a character's boundary): so must we,
        # for the catalog lookups and the renames of a restore.
        database = database.encode()[:MAX_IDENTIFIER].decode(errors="ignore")
        parameters = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in _PARAMETERS:
                raise SourceError(f"unsupported PostgreSQL URL parameter {name!r}")
            parameters.append((name, value))
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            user=unquote(parts.username) if parts.username else "postgres",
            password=unquote(parts.password) if parts.password is not None else None,
            database=database,
            parameters=tuple(parameters),
        )

    def connect_kwargs(self, database: str | None = None) -> dict[str, Any]:
        """psycopg's keyword arguments (the password among them, never in a string)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": database or self.database,
            **dict(self.parameters),
        }
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs

    def env(self, database: str | None = None) -> dict[str, str]:
        """The environment of ``pg_dump``/``pg_restore``/``psql``: where to connect,
        with which password; nothing else of the worker's but the allowlist."""
        declared = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": database or self.database,
            "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
            "PGAPPNAME": "formula-ops-backup",
        }
        declared.update({_PARAMETERS[name]: value for name, value in self.parameters})
        if self.password is not None:
            declared["PGPASSWORD"] = self.password
        return child_env(declared)

    def display(self, database: str | None = None) -> str:
        """The target without its credentials, for messages."""
        return f"{self.host}:{self.port}/{database or self.database}"


def dump_argv(snapshot: str, fmt: str, lock_wait_ms: int | None = None) -> list[str]:
    """``pg_dump``'s arguments (no URL, no password: those are in its environment)."""
    wait = LOCK_WAIT_TIMEOUT_MS if lock_wait_ms is None else lock_wait_ms
    argv = [
        "pg_dump",
        f"--snapshot={snapshot}",
        f"--format={fmt}",
        f"--lock-wait-timeout={wait}ms",
    ]
    if fmt == "custom":
        argv.append("--compress=6")
    return [*argv, "--no-owner", "--no-privileges"]


def restore_argv(fmt: str, database: str) -> list[str]:
    """The program reading a dump on its stdin into ``database``."""
    if fmt == "custom":
        return [
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            f"--dbname={database}",
        ]
    return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={database}"]


def derived_name(database: str, tag: str) -> str:
    """``<database>_<tag>_<8 hex>``: a plain identifier (lower-case letters, digits and
    ``_``, the database's other characters become ``_``) of at most 63 bytes."""
    base = re.sub(r"[^a-z0-9_]", "_", database.lower()) or "db"
    if not re.match(r"[a-z_]", base):
        base = f"db_{base}"
    suffix = f"_{tag}_{secrets.token_hex(4)}"
    return base[: MAX_IDENTIFIER - len(suffix)] + suffix


class _Tail:
    """Reads a program's stderr while it runs, keeping its last characters."""

    def __init__(self, stream: asyncio.StreamReader | None) -> None:
        self._data = bytearray()
        self._task = asyncio.create_task(self._read(stream)) if stream is not None else None

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self._data += chunk
            if len(self._data) > 2 * STDERR_TAIL:
                del self._data[: len(self._data) - STDERR_TAIL]

    async def text(self) -> str:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 5)
        return bytes(self._data[-STDERR_TAIL:]).decode(errors="replace").strip()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def _kill(process: asyncio.subprocess.Process) -> None:
    """End the program (its own process group) if it still runs."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _exit_text(program: str, code: int) -> str:
    if code < 0:
        return f"{program} was killed by signal {-code}"
    return f"{program} failed with exit code {code}"


class _Scratch:
    """A scratch database beside the target (see :class:`app.backups.sources.Scratch`)."""

    def __init__(self, source: PostgresSource, name: str, log: LogLine) -> None:
        self.source = source
        self.name = name
        self.log = log
        self.promoted = False

    async def load(self, chunks: AsyncIterable[bytes]) -> None:
        source = self.source
        argv = restore_argv(source.format, self.name)
        process = await source.spawn(
            argv,
            database=self.name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
        )
        tail = _Tail(process.stderr)
        await self.log(f"loading the dump into {self.name} with {argv[0]}")
        try:
            stdin = process.stdin
            assert stdin is not None
            try:
                async for chunk in chunks:
                    stdin.write(chunk)
                    await stdin.drain()  # backpressure: as fast as the program reads
                stdin.close()
                await stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it stopped reading: its exit code and stderr say why
            code = await process.wait()
            if code != 0:
                raise source.error(f"{_exit_text(argv[0], code)}: {await tail.text()}")
        finally:
            await _kill(process)
            await tail.close()

    async def row_counts(self, tables: list[str]) -> dict[str, int]:
        source = self.source
        async with await source.connect(self.name) as conn:
            try:
                found = await _tables_named(conn, tables)
                return {
                    table: await _count(conn, *found[table]) if table in found else -1
                    for table in tables
                }
            except psycopg.Error as error:
                raise source.error(f"could not count rows in {self.name}", error) from None

    async def query(self, sql_text: str) -> int:
        """One statement in a read-only transaction with a ``statement_timeout``; rows
        are streamed and counted, never held together."""
        source = self.source
        async with await source.connect(self.name) as conn:
            try:
                await conn.execute("BEGIN READ ONLY")
                await conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [f"{QUERY_TIMEOUT_MS}ms"]
                )
                rows = 0
                async with conn.cursor() as cursor:
                    async for _ in cursor.stream(sql_text):
                        rows += 1
                await conn.execute("ROLLBACK")
                return rows
            except psycopg.Error as error:
                raise source.error("smoke query failed", error) from None

    async def promote(self) -> None:
        """Rename this database over the target: no new connections to the target, end
        its sessions, rename it aside, rename this one to its name, drop the old one."""
        source = self.source
        target = source.database
        old = derived_name(target, "old")
        conn = await source.connect(MAINTENANCE_DATABASE, purpose="promote the restored database")
        async with conn:
            try:
                owner = await _owner(conn, target)
            except psycopg.Error as error:
                raise source.error(f"could not look up {target}", error) from None
            if owner is not None:
                await self._set_aside(conn, target, old)
            try:
                await _terminate(conn, self.name)
                await conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(self.name), sql.Identifier(target)
                    )
                )
            except psycopg.Error as error:
                if owner is not None:  # put the target back
                    with contextlib.suppress(psycopg.Error):
                        await conn.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(old), sql.Identifier(target)
                            )
                        )
                        await _allow_connections(conn, target, allow=True)
                raise source.error(f"could not rename {self.name} to {target}", error) from None
            self.promoted = True
            scratch, self.name = self.name, target
            await self.log(f"{scratch} is now {target}")
            if owner is None:
                return
            try:
                await conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(target), sql.Identifier(owner)
                    )
                )
            except psycopg.Error as error:
                await self.log(
                    source.error(f"{target} kept the restoring role as owner", error).args[0]
                )
            try:
                await source.drop(conn, old)
                await self.log(f"dropped the former {target} ({old})")
            except psycopg.Error as error:
                await self.log(source.error(f"the former {target} is kept as {old}", error).args[0])

    async def _set_aside(self, conn: psycopg.AsyncConnection[Any], target: str, old: str) -> None:
        source = self.source
        try:
            await _allow_connections(conn, target, allow=False)
        except psycopg.Error as error:
            raise source.error(f"could not close {target} to new connections", error) from None
        try:
            for attempt in range(RENAME_ATTEMPTS):
                ended = await _terminate(conn, target)
                if ended:
                    await self.log(f"ended {ended} session(s) on {target}")
                try:
                    await conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(target), sql.Identifier(old)
                        )
                    )
                    break
                except psycopg.errors.ObjectInUse:
                    if attempt == RENAME_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.2)  # a session was still ending
        except psycopg.Error as error:
            with contextlib.suppress(psycopg.Error):
                await _allow_connections(conn, target, allow=True)
            raise source.error(f"could not rename {target} aside", error) from None


class PostgresSource:
    """A PostgreSQL database (see :class:`app.backups.sources.Source`)."""

    engine = "postgresql"

    def __init__(self, url: str, *, format: str = "custom", largest_tables: int = 10) -> None:
        if format not in FORMATS:
            raise SourceError("a PostgreSQL dump's format is custom or plain")
        self.target = PgTarget.from_url(url)
        self.database = self.target.database
        self.format = format
        self.extension = ".dump" if format == "custom" else ".sql.gz"
        self.compress = format == "plain"
        self.largest_tables = largest_tables
        self._scrubber = Scrubber([self.target.password] if self.target.password else [])

    # -- shared by the dump and the scratch database --------------------------------------

    def error(self, message: str, cause: BaseException | None = None) -> SourceError:
        """A :class:`SourceError` whose text is redacted and free of the password."""
        text = f"{message}: {str(cause).strip()}" if cause is not None else message
        text = self._scrubber.text(text)
        if self.target.password:  # also when shorter than the scrubber's minimum
            text = text.replace(f":{self.target.password}@", ":[redacted]@")
        return SourceError(text)

    async def connect(
        self, database: str | None = None, *, wait: int = CONNECT_TIMEOUT, purpose: str = ""
    ) -> psycopg.AsyncConnection[Any]:
        """An autocommit connection to ``database`` (default: the target)."""
        try:
            async with asyncio.timeout(wait + 1):
                return await psycopg.AsyncConnection.connect(
                    autocommit=True,
                    connect_timeout=wait,
                    **self.target.connect_kwargs(database),
                )
        except (psycopg.Error, TimeoutError) as error:
            what = f"cannot connect to {self.target.display(database)}"
            if purpose:
                what = f"{what} to {purpose}"
            raise self.error(what, error) from None

    async def spawn(
        self, argv: Sequence[str], *, database: str, stdin: int, stdout: int
    ) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=stdout,
                stderr=asyncio.subprocess.PIPE,
                env=self.target.env(database),
                start_new_session=True,
                limit=CHUNK,
            )
        except OSError as error:
            raise self.error(f"cannot start {argv[0]}", error) from None

    async def drop(self, conn: psycopg.AsyncConnection[Any], name: str) -> None:
        """``DROP DATABASE IF EXISTS`` (ending its sessions first)."""
        if conn.info.server_version >= FORCE_DROP_VERSION:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        else:
            await _terminate(conn, name)
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    async def _admin(self) -> psycopg.AsyncConnection[Any]:
        """A connection for ``CREATE``/``DROP DATABASE``: the server's ``postgres``
        database, else the target itself."""
        try:
            return await self.connect(MAINTENANCE_DATABASE)
        except SourceError:
            return await self.connect()

    # -- Source ---------------------------------------------------------------------------

    async def ping(self) -> None:
        conn = await self.connect(wait=PING_TIMEOUT)
        async with conn:
            try:
                await conn.execute("SELECT 1")
            except psycopg.Error as error:
                raise self.error(f"{self.target.display()} does not answer", error) from None

    @contextlib.asynccontextmanager
    async def dump(self, log: LogLine) -> AsyncIterator[Dump]:
        conn = await self.connect()
        process: asyncio.subprocess.Process | None = None
        tail: _Tail | None = None
        try:
            try:  # the snapshot stays open (and pg_dump in it) until the context ends
                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                await conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)", [f"{LOCK_WAIT_TIMEOUT_MS}ms"]
                )
                row = await (await conn.execute("SELECT pg_export_snapshot()")).fetchone()
                assert row is not None
                snapshot = str(row[0])
                largest = await (
                    await conn.execute(
                        _USER_TABLES + "ORDER BY " + _SIZE + " DESC, c.reltuples DESC,"
                        " n.nspname, c.relname LIMIT %s",
                        [self.largest_tables],
                    )
                ).fetchall()
                counts = {f"{s}.{t}": await _count(conn, s, t) for s, t in largest}
            except psycopg.Error as error:
                raise self.error(f"could not count rows in {self.database}", error) from None
            await log(
                f"snapshot {snapshot} of {self.target.display()}: exact row counts of "
                f"{len(counts)} table(s); pg_dump --format={self.format}"
            )
            process = await self.spawn(
                dump_argv(snapshot, self.format),
                database=self.database,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
            )
            tail = _Tail(process.stderr)
            running, stderr = process, tail
            stdout = process.stdout
            assert stdout is not None

            async def chunks() -> AsyncIterator[bytes]:
                while chunk := await stdout.read(CHUNK):
                    yield chunk

            async def finished() -> None:
                if not stdout.at_eof():
                    await _kill(running)
                    raise SourceError("the dump was not read to its end")
                code = await running.wait()
                if code != 0:
                    raise self.error(f"{_exit_text('pg_dump', code)}: {await stderr.text()}")

            yield Dump(dict(sorted(counts.items())), chunks(), finished)
        finally:
            if process is not None:
                await _kill(process)
            if tail is not None:
                await tail.close()
            await conn.close()

    @contextlib.asynccontextmanager
    async def scratch(self, log: LogLine) -> AsyncIterator[_Scratch]:
        name = derived_name(self.database, "scratch")
        conn = await self._admin()
        async with conn:
            try:
                await conn.execute(await _create_statement(conn, self.database, name))
            except psycopg.Error as error:
                raise self.error(f"could not create the scratch database {name}", error) from None
        await log(f"scratch database {name}")
        scratch = _Scratch(self, name, log)
        try:
            yield scratch
        except BaseException:
            if not scratch.promoted:
                with contextlib.suppress(SourceError):
                    await self._drop_scratch(name, log)
            raise
        if not scratch.promoted:
            await self._drop_scratch(name, log)

    async def _drop_scratch(self, name: str, log: LogLine) -> None:
        try:
            conn = await self._admin()
            async with conn:
                await self.drop(conn, name)
        except (psycopg.Error, SourceError) as error:
            failure = self.error(f"could not drop the scratch database {name}", error)
            await log(failure.args[0])
            raise failure from None
        await log(f"dropped the scratch database {name}")


# -- queries --------------------------------------------------------------------------------


async def _count(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    row = await (await conn.execute(query)).fetchone()
    assert row is not None
    return int(row[0])


async def _tables_named(
    conn: psycopg.AsyncConnection[Any], names: list[str]
) -> dict[str, tuple[str, str]]:
    """``schema.table`` names → (schema, table), matched whole (either may hold dots)."""
    rows = await (
        await conn.execute(
            _USER_TABLES + "AND n.nspname || '.' || c.relname = ANY(%s)",
            [names],
        )
    ).fetchall()
    return {f"{schema}.{table}": (schema, table) for schema, table in rows}


async def _owner(conn: psycopg.AsyncConnection[Any], database: str) -> str | None:
    """The database's owner; ``None`` when there is no such database."""
    row = await (
        await conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [database]
        )
    ).fetchone()
    return None if row is None else str(row[0])


async def _create_statement(
    conn: psycopg.AsyncConnection[Any], target: str, name: str
) -> sql.Composed:
    """``CREATE DATABASE`` of an empty database (``template0``) with the target's
    encoding and locale (the server's defaults when the target is gone)."""
    row = await (
        await conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database"
            " WHERE datname = %s",
            [target],
        )
    ).fetchone()
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if row is None:
        return statement
    encoding, collate, ctype = row
    return sql.SQL("{} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        statement, sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)
    )


async def _terminate(conn: psycopg.AsyncConnection[Any], database: str) -> int:
    """End every other session on ``database``; how many there were."""
    rows = await (
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        )
    ).fetchall()
    return len(rows)


async def _allow_connections(
    conn: psycopg.AsyncConnection[Any], database: str, *, allow: bool
) -> None:
    await conn.execute(
        sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL("true" if allow else "false")
        )
    )
