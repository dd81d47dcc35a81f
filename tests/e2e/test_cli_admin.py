"""``formula-ops tokens …`` and ``formula-ops audit verify`` as an operator runs them: the
real executable in a subprocess, on SQLite and on PostgreSQL.

Each backend is migrated once by ``formula-ops migrate``; tests then work on copies of that
database (a file copy for SQLite, ``CREATE DATABASE … TEMPLATE`` on PostgreSQL), since
every CLI call costs a process start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from pydantic import SecretStr

from app.audit import service as audit_service
from app.audit.models import GENESIS_HASH, Outcome
from app.audit.sealer import seal_pending
from app.auth.principal import Principal
from app.auth.secrets import hash_secret, new_token_id
from app.core.db import UnitOfWork, create_engine, make_sessionmaker, write_engine
from app.core.settings import Settings
from tests.helpers import PG_ADMIN_URL, create_pg_database, drop_pg_database, in_thread, pg_url

pytestmark = pytest.mark.slow
FORMULA_OPS = Path(sys.executable).parent / "formula-ops"
BACKENDS = ("sqlite", "postgres")
TOKEN = re.compile(r"^fops_[0-9a-z]{16}_[0-9A-Za-z]{38}$")
DAY = dt.timedelta(days=1)
SLACK = dt.timedelta(minutes=1)
SQLITE_FILE = "formula-ops.db"


class Installation:
    """One database, and the environment that points ``formula-ops`` at it."""

    def __init__(self, kind: str, state_dir: Path, database: str | None = None) -> None:
        self.kind = kind
        self.state_dir = state_dir
        self.database = database
        self.database_url = pg_url(database) if database else None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
        self.env["FORMULA_OPS_STATE_DIR"] = str(state_dir)
        if self.database_url is not None:
            self.env["FORMULA_OPS_DATABASE_URL"] = self.database_url

    # -- the command line ------------------------------------------------------------

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(FORMULA_OPS), *args],
            cwd=self.state_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == code, (
            f"`formula-ops {' '.join(args)}` exited {result.returncode}, expected {code}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return result

    def list_tokens(self) -> dict[str, list[str]]:
        """The rows of ``tokens list`` by token id: id, name, role, environment, state,
        expires, last used, scope (not a terminal: one tab-separated line each, after a header)."""
        lines = self.run("tokens", "list").stdout.splitlines()
        assert lines[0].split("\t") == [
            "id",
            "name",
            "role",
            "environment",
            "state",
            "expires",
            "last used",
            "scope",
        ]
        rows: dict[str, list[str]] = {}
        for line in lines[1:]:
            cells = line.split("\t")
            assert len(cells) == 8, line
            assert re.fullmatch(r"[0-9a-z]{16}", cells[0]), line
            rows[cells[0]] = cells
        return rows

    def verify(self, code: int) -> str:
        """``audit verify``'s output on one line."""
        result = self.run("audit", "verify", code=code)
        return " ".join((result.stdout + result.stderr).split())

    # -- the database, directly ------------------------------------------------------

    @property
    def settings(self) -> Settings:
        url = SecretStr(self.database_url) if self.database_url else None
        return Settings(state_dir=self.state_dir, database_url=url)

    @contextmanager
    def connect(self) -> Iterator[Any]:
        if self.database_url is None:
            conn = sqlite3.connect(self.state_dir / SQLITE_FILE, isolation_level=None)
            conn.row_factory = sqlite3.Row
            try:
                yield conn
            finally:
                conn.close()
        else:
            with psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as pg:
                yield pg

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        if self.database_url is not None:
            sql = sql.replace("?", "%s")
        with self.connect() as conn:
            return [dict(row) for row in conn.execute(sql, params).fetchall()]

    def tamper(self, sql: str, *params: Any) -> None:
        """Change audit_event as someone with write access to the database can: first the
        append-only triggers out of the way, then the statement."""
        with self.connect() as conn:
            if self.database_url is None:
                conn.execute("DROP TRIGGER audit_event_no_update")
                conn.execute("DROP TRIGGER audit_event_no_delete")
            else:
                conn.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
                sql = sql.replace("?", "%s")
            changed = conn.execute(sql, params).rowcount
        assert changed == 1, f"{sql!r} changed {changed} rows"

    def raw_bytes(self) -> bytes:
        """Everything the database holds: the SQLite files, or a ``pg_dump``."""
        if self.database_url is None:
            return b"".join(p.read_bytes() for p in sorted(self.state_dir.glob(SQLITE_FILE + "*")))
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            pytest.skip("pg_dump is not installed")
        dump = subprocess.run([pg_dump, "--dbname", self.database_url], capture_output=True)
        assert dump.returncode == 0, dump.stderr
        assert b"COPY public.api_token" in dump.stdout
        return dump.stdout


def _pg_name() -> str:
    return f"formula_ops_cli_{uuid.uuid4().hex[:10]}"


@contextmanager
def _empty(kind: str, state_dir: Path) -> Iterator[Installation]:
    """A new, empty database of ``kind``."""
    if kind == "sqlite":
        yield Installation(kind, state_dir)
        return
    name = _pg_name()
    create_pg_database(name)
    try:
        yield Installation(kind, state_dir, name)
    finally:
        drop_pg_database(name)


@contextmanager
def _copy(source: Installation, state_dir: Path) -> Iterator[Installation]:
    """A new database holding what ``source`` holds."""
    if source.database is None:
        src = sqlite3.connect(source.state_dir / SQLITE_FILE)
        dst = sqlite3.connect(state_dir / SQLITE_FILE)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        yield Installation(source.kind, state_dir)
        return
    name = _pg_name()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source.database}"')
    try:
        yield Installation(source.kind, state_dir, name)
    finally:
        drop_pg_database(name)


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Installation]:
    """An empty database of each kind, not migrated."""
    with _empty(request.param, tmp_path) as installation:
        yield installation


@pytest.fixture(scope="module", params=BACKENDS)
def migrated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    """A database of each kind brought to head by ``formula-ops migrate``; tests copy it."""
    with _empty(request.param, tmp_path_factory.mktemp("migrated")) as installation:
        assert "database at head" in installation.run("migrate").stdout
        yield installation


def _utc(value: Any) -> dt.datetime:
    """A timestamp as read from SQLite (naive UTC text) or PostgreSQL (aware)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _summary(event: dict[str, Any]) -> dict[str, Any]:
    value = event["summary"]
    return json.loads(value) if isinstance(value, str) else dict(value)


class TestUnmigrated:
    def test_commands_refuse_a_database_that_is_not_migrated(self, fresh: Installation) -> None:
        result = fresh.run("tokens", "create", "--role", "admin", "--name", "bootstrap", code=2)
        # on stderr: `$(formula-ops tokens create … | tail -n 1)` must not take it for a token
        assert "formula-ops migrate" in result.stderr
        assert result.stdout == ""
        assert "fops_" not in result.stderr


@dataclass(frozen=True)
class Issued:
    token_id: str
    value: str
    stdout: str

    @property
    def secret(self) -> str:
        return self.value[22:54]


@dataclass(frozen=True)
class Session:
    """What an operator did on a new installation, with what the CLI answered."""

    installation: Installation
    bootstrap: Issued  # --role admin --name bootstrap (default expiry)
    forever: Issued  # --no-expiry
    five_days: Issued  # --expires-in-days 5 --environment production
    listed: dict[str, list[str]]
    revoked: str  # the output of `tokens revoke <bootstrap>`
    listed_after_revoke: dict[str, list[str]]
    unknown: subprocess.CompletedProcess[str]  # `tokens revoke <an id no token has>`
    conflicting: subprocess.CompletedProcess[str]  # --no-expiry with --expires-in-days

    def token(self, token_id: str) -> dict[str, Any]:
        rows = self.installation.query("SELECT * FROM api_token WHERE id = ?", token_id)
        assert len(rows) == 1, rows
        return rows[0]

    def events(self) -> list[dict[str, Any]]:
        return self.installation.query("SELECT * FROM audit_event ORDER BY seq")


def _create(installation: Installation, args: list[str]) -> Issued:
    out = installation.run("tokens", "create", *args).stdout
    value = out.strip().splitlines()[-1]
    assert TOKEN.match(value), out
    return Issued(value.split("_")[1], value, out)


@pytest.fixture(scope="class")
def session(migrated: Installation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with _copy(migrated, tmp_path_factory.mktemp("tokens")) as installation:
        # Operators at once: the audit chain must come out whole all the same.
        with ThreadPoolExecutor(max_workers=4) as pool:
            both = pool.submit(
                installation.run,
                *("tokens", "create", "--role=viewer", "--name=both"),
                *("--no-expiry", "--expires-in-days=5"),
                code=2,
            )
            bootstrap, forever, five_days = pool.map(
                lambda args: _create(installation, args),
                [
                    ["--role", "admin", "--name", "bootstrap"],
                    ["--role", "viewer", "--name", "forever", "--no-expiry"],
                    [
                        "--role=deployer",
                        "--name=ci deploy",
                        "--environment=production",
                        "--expires-in-days=5",
                    ],
                ],
            )
            conflicting = both.result()
        listed = installation.list_tokens()
        revoked = installation.run("tokens", "revoke", bootstrap.token_id).stdout
        yield Session(
            installation=installation,
            bootstrap=bootstrap,
            forever=forever,
            five_days=five_days,
            listed=listed,
            revoked=revoked,
            listed_after_revoke=installation.list_tokens(),
            unknown=installation.run("tokens", "revoke", new_token_id(), code=2),
            conflicting=conflicting,
        )


class TestTokens:
    def test_create_prints_the_token_once_on_its_last_line(self, session: Session) -> None:
        issued = session.bootstrap
        *before, last = issued.stdout.strip().splitlines()
        assert TOKEN.match(last)
        assert issued.stdout.count(issued.value) == 1
        assert issued.token_id in "\n".join(before)
        assert len({session.bootstrap.value, session.forever.value, session.five_days.value}) == 3

    def test_the_database_holds_the_hash_of_the_secret_never_the_secret(
        self, session: Session
    ) -> None:
        stored = session.installation.raw_bytes()
        for issued in (session.bootstrap, session.forever, session.five_days):
            assert session.token(issued.token_id)["secret_hash"] == hash_secret(issued.secret)
            assert hash_secret(issued.secret).encode() in stored
            assert issued.secret.encode() not in stored
            assert issued.value.encode() not in stored

    def test_list_shows_id_name_role_environment_and_state(self, session: Session) -> None:
        assert set(session.listed) == {
            session.bootstrap.token_id,
            session.forever.token_id,
            session.five_days.token_id,
        }
        assert session.listed[session.bootstrap.token_id][:5] == [
            session.bootstrap.token_id,
            "bootstrap",
            "admin",
            "-",
            "active",
        ]
        assert session.listed[session.five_days.token_id][:5] == [
            session.five_days.token_id,
            "ci deploy",
            "deployer",
            "production",
            "active",
        ]
        assert session.listed[session.forever.token_id][2] == "viewer"
        assert {row[6] for row in session.listed.values()} == {"-"}  # never used

    def test_revoke_revokes(self, session: Session) -> None:
        token_id = session.bootstrap.token_id
        assert token_id in session.revoked
        after = session.listed_after_revoke
        assert after[token_id][4] == "revoked"
        assert after[session.forever.token_id][4] == "active"
        assert session.token(token_id)["revoked_at"] is not None
        assert session.token(session.forever.token_id)["revoked_at"] is None

    def test_revoking_an_unknown_token_fails(self, session: Session) -> None:
        """Exit 2 (bad input), as for an unknown id through the API; the error on stderr."""
        unknown = session.unknown.args[-1]
        assert unknown in session.unknown.stderr
        assert "not found" in session.unknown.stderr.lower()
        assert session.unknown.stdout == ""
        assert all(event["resource_id"] != unknown for event in session.events())

    def test_no_expiry_and_a_lifetime_together_are_refused(self, session: Session) -> None:
        output = session.conflicting.stdout + session.conflicting.stderr
        assert "--no-expiry" in output
        assert "fops_" not in output
        assert "both" not in {row[1] for row in session.listed.values()}

    def test_expiry_is_90_days_by_default_or_as_asked(self, session: Session) -> None:
        def lifetime(issued: Issued) -> dt.timedelta | None:
            row = session.token(issued.token_id)
            if row["expires_at"] is None:
                return None
            return _utc(row["expires_at"]) - _utc(row["created_at"])

        ninety = lifetime(session.bootstrap)
        assert ninety is not None
        assert abs(ninety - 90 * DAY) < SLACK
        five = lifetime(session.five_days)
        assert five is not None
        assert abs(five - 5 * DAY) < SLACK
        assert lifetime(session.forever) is None

        for issued in (session.bootstrap, session.five_days):
            expires = _utc(session.token(issued.token_id)["expires_at"])
            assert session.listed[issued.token_id][5] == expires.strftime("%Y-%m-%d %H:%M")
        assert session.listed[session.forever.token_id][5] == "-"

    def test_each_create_and_revoke_leaves_one_audit_event(self, session: Session) -> None:
        events = session.events()
        assert [e["seq"] for e in events] == [1, 2, 3, 4]
        created = {e["resource_id"]: e for e in events if e["action"] == "token.create"}
        revoked = [e for e in events if e["action"] == "token.revoke"]
        assert len(created) == 3
        assert set(created) == {
            session.bootstrap.token_id,
            session.forever.token_id,
            session.five_days.token_id,
        }
        assert [e["resource_id"] for e in revoked] == [session.bootstrap.token_id]
        assert events[-1] is revoked[0]

        actor = f"cli:{getpass.getuser()}"
        for event in events:
            assert event["actor_name"] == actor
            assert event["actor_token_id"] is None
            assert event["actor_role"] == "admin"
            assert event["resource_type"] == "token"
            assert event["outcome"] == "success"
        five = _summary(created[session.five_days.token_id])
        assert five["name"] == "ci deploy"
        assert five["role"] == "deployer"
        assert five["environment"] == "production"
        assert _summary(created[session.forever.token_id])["expires_at"] is None
        assert _summary(revoked[0]) == {"name": "bootstrap", "already_revoked": False}

    def test_the_token_never_reaches_the_audit_trail(self, session: Session) -> None:
        trail = json.dumps(session.events(), default=str, ensure_ascii=False)
        for issued in (session.bootstrap, session.forever, session.five_days):
            assert issued.secret not in trail
            assert hash_secret(issued.secret) not in trail
        assert "fops_" not in trail

    def test_audit_verify_checks_every_event(self, session: Session) -> None:
        count = len(session.events())
        output = session.installation.verify(code=0)
        assert f"{count} events verified" in output, output


CHAIN = 7


def _append(installation: Installation, count: int) -> audit_service.Verification:
    """``count`` events appended with the application's own ``record()``, then verified
    in-process."""

    async def main() -> audit_service.Verification:
        engine = create_engine(installation.settings)
        try:
            sessionmaker = make_sessionmaker(write_engine(engine))
            principal = Principal.system("cli:test")
            for n in range(1, count + 1):
                async with UnitOfWork(sessionmaker) as uow:
                    await audit_service.record(
                        uow.session,
                        principal,
                        action="test.event",
                        resource_type="test",
                        resource_id=str(n),
                        summary={"n": n},
                    )
            await seal_pending(engine)
            async with UnitOfWork(sessionmaker) as uow:
                return await audit_service.verify(uow.session)
        finally:
            await engine.dispose()

    return in_thread(asyncio.run, main())


@pytest.fixture(scope="module")
def chain_template(
    migrated: Installation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    """A migrated database with an audit chain of ``CHAIN`` events."""
    with _copy(migrated, tmp_path_factory.mktemp("chain")) as installation:
        checked = _append(installation, CHAIN)
        assert checked.valid, f"a chain written by record() does not verify: {checked}"
        assert checked.checked == CHAIN
        yield installation


@pytest.fixture
def chain(chain_template: Installation, tmp_path: Path) -> Iterator[Installation]:
    with _copy(chain_template, tmp_path) as installation:
        yield installation


class TestAuditVerify:
    def test_an_altered_summary_is_found(self, chain: Installation) -> None:
        chain.tamper("UPDATE audit_event SET summary = ? WHERE seq = 4", json.dumps({"n": 40}))
        output = chain.verify(code=1)
        assert "broken at event 4 " in output, output
        assert "content does not match its hash" in output
        assert "3 events before it verified" in output

    def test_a_deleted_event_in_the_middle_is_found(self, chain: Installation) -> None:
        chain.tamper("DELETE FROM audit_event WHERE seq = 4")
        output = chain.verify(code=1)
        assert "broken at event 4:" in output, output
        assert "event 4 is missing" in output
        assert "3 events before it verified" in output

    def test_a_deleted_last_event_is_found(self, chain: Installation) -> None:
        chain.tamper("DELETE FROM audit_event WHERE seq = ?", CHAIN)
        output = chain.verify(code=1)
        assert f"broken at event {CHAIN}:" in output, output
        assert f"{CHAIN - 1} events before it verified" in output


def _bulk_chain(installation: Installation, count: int) -> None:
    """``count`` events hashed by the application's ``compute_hash`` and COPYed in."""
    assert installation.database_url is not None
    start = dt.datetime.now(dt.UTC) - DAY
    prev_hash = GENESIS_HASH
    columns = (
        "id, seq, created_at, actor_name, actor_role, action, resource_type, resource_id, "
        "outcome, summary, prev_hash, hash"
    )
    with (
        psycopg.connect(installation.database_url) as conn,
        conn.cursor().copy(f"COPY audit_event ({columns}) FROM STDIN") as copy,
    ):
        buffer = io.StringIO()
        for n in range(1, count + 1):
            # compute_hash reads the event's attributes; a plain namespace is much quicker
            # to build than 100 000 ORM instances.
            event = types.SimpleNamespace(
                id=str(uuid.UUID(int=n, version=4)),
                seq=n,
                created_at=start + dt.timedelta(microseconds=1001 * n),
                actor_token_id=None,
                actor_name="cli:bulk",
                actor_role="admin",
                actor_kind=None,  # as written before the column existed
                origin_token_id=None,
                client_address=None,
                request_id=None,
                action="test.bulk",
                resource_type="test",
                resource_id=str(n),
                outcome=Outcome.SUCCESS.value,
                summary={"n": n},
                prev_hash=prev_hash,
            )
            digest = audit_service.compute_hash(event)
            buffer.write(
                f"{event.id}\t{n}\t{event.created_at.isoformat()}\tcli:bulk\tadmin\ttest.bulk"
                f"\ttest\t{n}\tsuccess\t{json.dumps(event.summary)}\t{prev_hash}\t{digest}\n"
            )
            prev_hash = digest
            if n % 20_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())
    with installation.connect() as conn:
        conn.execute("UPDATE audit_chain_head SET seq = %s, hash = %s", (count, prev_hash))


@pytest.mark.parametrize("migrated", ["postgres"], indirect=True)
def test_a_chain_of_100_000_events_without_its_last(migrated: Installation, tmp_path: Path) -> None:
    count = 100_000
    with _copy(migrated, tmp_path) as installation:
        _bulk_chain(installation, count)
        installation.tamper("DELETE FROM audit_event WHERE seq = ?", count)
        output = installation.verify(code=1)
        assert f"broken at event {count}:" in output, output
        assert f"head names event {count}" in output
        # every event before it was read and checked
        assert f"{count - 1} events before it verified" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", ""], "--name: String should have at least 1 character"),
        (["--name", "x", "--environment", "Bad Env!"], "--environment: String should match"),
        (["--name", "x", "--no-expiry", "--expires-in-days", "3"], "either"),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(
    migrated: Installation, tmp_path: Path, args: list[str], message: str
) -> None:
    with _copy(migrated, tmp_path) as installation:
        result = installation.run("tokens", "create", "--role", "viewer", *args, code=2)
    output = result.stdout + result.stderr
    assert message in output
    assert "Traceback" not in output


def test_a_token_limited_to_the_alerts_capability(migrated: Installation, tmp_path: Path) -> None:
    with _copy(migrated, tmp_path) as installation:
        issued = _create(installation, ["--role", "operator", "--name", "am", "--scope", "alerts"])
        assert installation.list_tokens()[issued.token_id][-1] == "alerts"
        [row] = installation.query("SELECT scope FROM api_token WHERE id = ?", issued.token_id)
        assert row["scope"] == "alerts"
        refused = installation.run(
            "tokens", "create", "--role", "viewer", "--name", "x", "--scope", "everything", code=2
        )
    assert "--scope" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    installation = Installation("postgres", tmp_path)
    installation.env["FORMULA_OPS_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/none"
    result = installation.run("tokens", "list", code=2)
    assert "The database is unreachable" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
