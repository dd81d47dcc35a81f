"""Audit events are appended with no lock shared between writers and sealed into the hash
chain shortly after commit; tampering with sealed events is still found."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import pytest_asyncio
from pydantic import SecretStr
from sqlalchemy import func, select, text

from app.audit import service as audit_service
from app.audit.models import AuditEvent
from app.audit.sealer import seal_pending
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core import migrate
from app.core.context import AppContext
from app.core.db import UnitOfWork, create_engine, make_sessionmaker, utcnow, write_engine
from app.core.settings import Settings
from app.main import create_app
from tests.factories import IssuedToken, issue_token
from tests.helpers import create_pg_database, drop_pg_database, in_thread, live

WRITERS = 50
BOUND = 2.0  # seconds: Settings.audit_seal_bound_seconds, the bound the sealer is held to


async def _lock_waits(dsn: str, stop: asyncio.Event, seen: list[tuple[str, str, str]]) -> int:
    """Sample this database's sessions waiting for a lock until ``stop``; the samples."""
    samples = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            rows = await (
                await conn.execute(
                    "SELECT wait_event_type, wait_event, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND wait_event_type = 'Lock'"
                )
            ).fetchall()
            seen.extend((str(r[0]), str(r[1]), str(r[2])) for r in rows)
            samples += 1
            await asyncio.sleep(0.002)
    return samples


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_fifty_concurrent_writers_never_wait_for_each_others_audit_append(
    context: AppContext,
) -> None:
    """Fifty token creations at once through the served application (its own context, so
    its sealer runs): no session waits for a lock while they run, and afterwards every
    event is sealed within the bound and the chain verifies."""
    tokens = [await issue_token(context, Role.ADMIN, name=f"writer {n}") for n in range(WRITERS)]
    app = create_app(context.settings)
    async with (
        live(app, context) as base_url,
        httpx.AsyncClient(
            base_url=base_url,
            timeout=60,
            limits=httpx.Limits(max_connections=WRITERS, max_keepalive_connections=WRITERS),
        ) as http,
    ):
        # each writer's token used once first: its last-use row is then not written again
        for token in tokens:
            assert (await http.get("/v1/tokens", headers=token.headers)).status_code == 200
        started = utcnow()
        stop, seen = asyncio.Event(), []
        dsn = context.settings.database_url_value.replace("+psycopg", "")
        sampler = asyncio.create_task(_lock_waits(dsn, stop, seen))
        await asyncio.sleep(0.05)

        async def write(token: IssuedToken) -> int:
            response = await http.post(
                "/v1/tokens", json={"name": "burst", "role": "viewer"}, headers=token.headers
            )
            return response.status_code

        for _ in range(3):  # three waves of fifty
            statuses = await asyncio.gather(*(write(t) for t in tokens))
            assert statuses == [201] * WRITERS
        stop.set()
        samples = await sampler
        assert samples > 10, "pg_stat_activity was sampled while the writers ran"
        assert seen == [], f"sessions waited for locks: {seen[:5]}"

        deadline = asyncio.get_running_loop().time() + BOUND + 5
        while True:
            async with context.sessionmaker() as session:
                unsealed = await session.scalar(
                    select(func.count()).select_from(AuditEvent).where(AuditEvent.seq.is_(None))
                )
            if not unsealed or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert unsealed == 0, "the served application's sealer sealed every event"
        async with context.sessionmaker() as session:
            burst = (
                await session.execute(
                    select(AuditEvent.created_at, AuditEvent.sealed_at).where(
                        AuditEvent.action == "token.create", AuditEvent.created_at >= started
                    )
                )
            ).all()
        assert len(burst) == 3 * WRITERS
        delays = [(sealed - created).total_seconds() for created, sealed in burst if sealed]
        assert len(delays) == len(burst)
        assert max(delays) <= BOUND, f"sealed after {max(delays):.2f} s"
        verified = await http.get("/v1/audit-events/verify", headers=tokens[0].headers)
        assert verified.json()["valid"] is True, verified.json()
        scraped = await http.get("/metrics")
        assert "formula_ops_audit_seal_lag_seconds 0.0" in scraped.text


@pytest.fixture(params=["sqlite", "postgres"])
def private_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A migrated database of each kind of its own (tampering breaks its chain for good)."""
    if request.param == "sqlite":
        settings = Settings(state_dir=tmp_path)
        in_thread(migrate.upgrade, settings)
        yield settings
        return
    name = f"formula_ops_seal_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    settings = Settings(state_dir=tmp_path, database_url=SecretStr(url))
    in_thread(migrate.upgrade, settings)
    yield settings
    drop_pg_database(name)


class Trail:
    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(settings)
        self.sessionmaker = make_sessionmaker(write_engine(self.engine))
        self.postgres = self.engine.dialect.name == "postgresql"

    async def append(self, count: int) -> None:
        for n in range(count):
            async with UnitOfWork(self.sessionmaker) as uow:
                await audit_service.record(
                    uow.session,
                    Principal.system("tests"),
                    action="test.event",
                    resource_id=str(n),
                    summary={"n": n},
                )

    async def verify(self, bound: float = BOUND) -> audit_service.Verification:
        async with self.sessionmaker() as session:
            return await audit_service.verify(session, bound_seconds=bound)

    async def execute(self, statement: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(statement))

    async def tamper(self, *statements: str) -> None:
        """As someone with write access to the database: the append-only triggers out of
        the way, then the statements."""
        async with self.engine.begin() as conn:
            if self.postgres:
                await conn.execute(
                    text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
                )
            else:
                await conn.execute(text("DROP TRIGGER audit_event_no_update"))
                await conn.execute(text("DROP TRIGGER audit_event_no_delete"))
            for statement in statements:
                await conn.execute(text(statement))


@pytest_asyncio.fixture
async def trail(private_settings: Settings) -> AsyncIterator[Trail]:
    trail = Trail(private_settings)
    try:
        yield trail
    finally:
        await trail.engine.dispose()


class TestSealing:
    async def test_events_are_sealed_in_one_chain_after_commit(self, trail: Trail) -> None:
        await trail.append(5)
        pending = await trail.verify()
        assert (pending.valid, pending.checked, pending.unsealed) == (True, 0, 5)
        assert (await seal_pending(trail.engine)).count == 5
        await trail.append(2)
        assert (await seal_pending(trail.engine)).count == 2
        assert (await seal_pending(trail.engine)).count == 0
        result = await trail.verify()
        assert (result.valid, result.checked, result.head_seq, result.unsealed) == (
            True,
            7,
            7,
            0,
        )

    async def test_events_left_unsealed_past_the_bound_are_reported(self, trail: Trail) -> None:
        await trail.append(3)
        await seal_pending(trail.engine)
        await trail.append(2)
        await asyncio.sleep(0.05)
        result = await trail.verify(bound=0.01)
        assert not result.valid
        assert (result.checked, result.unsealed, result.overdue) == (3, 2, 2)
        assert result.broken is not None
        assert result.broken.seq == 4
        assert "2 events not sealed within 0.01 s" in result.broken.reason

    async def test_an_unsealed_event_cannot_be_changed_or_sealed_twice(self, trail: Trail) -> None:
        await trail.append(1)
        with pytest.raises(Exception, match="append-only"):
            await trail.execute("UPDATE audit_event SET action = 'nothing'")
        with pytest.raises(Exception, match="append-only"):
            await trail.execute("UPDATE audit_event SET seq = 1, action = 'x', prev_hash = 'a'")
        with pytest.raises(Exception, match="append-only"):
            await trail.execute("DELETE FROM audit_event")
        await seal_pending(trail.engine)
        with pytest.raises(Exception, match="append-only"):
            await trail.execute("UPDATE audit_event SET seq = 9, hash = 'b', prev_hash = 'a'")
        assert (await trail.verify()).valid


class TestTamperingWithSealedEvents:
    @pytest_asyncio.fixture(autouse=True)
    async def _chain(self, trail: Trail) -> None:
        await trail.append(6)
        await seal_pending(trail.engine)
        assert (await trail.verify()).valid

    async def test_a_changed_event_is_found(self, trail: Trail) -> None:
        await trail.tamper("UPDATE audit_event SET resource_id = '40' WHERE seq = 4")
        result = await trail.verify()
        assert result.broken is not None
        assert (result.valid, result.broken.seq, result.checked) == (False, 4, 3)
        assert result.broken.reason == "content does not match its hash"

    async def test_a_deleted_event_is_found(self, trail: Trail) -> None:
        await trail.tamper("DELETE FROM audit_event WHERE seq = 3")
        result = await trail.verify()
        assert result.broken is not None
        assert (result.valid, result.broken.seq, result.broken.reason) == (
            False,
            3,
            "event 3 is missing",
        )

    async def test_reordered_events_are_found(self, trail: Trail) -> None:
        await trail.tamper(
            "UPDATE audit_event SET seq = 0 WHERE seq = 2",
            "UPDATE audit_event SET seq = 2 WHERE seq = 5",
            "UPDATE audit_event SET seq = 5 WHERE seq = 0",
        )
        result = await trail.verify()
        assert result.broken is not None
        assert (result.valid, result.broken.seq, result.checked) == (False, 2, 1)
        assert result.broken.reason == "does not link to the event before it"

    async def test_a_deleted_last_event_is_found(self, trail: Trail) -> None:
        await trail.tamper("DELETE FROM audit_event WHERE seq = 6")
        result = await trail.verify()
        assert result.broken is not None
        assert (result.valid, result.broken.seq) == (False, 6)
        assert "head names event 6" in result.broken.reason


def test_the_bound_is_the_default_setting() -> None:
    assert Settings().audit_seal_bound_seconds == BOUND
    assert Settings().audit_seal_interval_seconds < BOUND / 2
