"""Rows written in one batch (``app.core.db.write_batch``) are the rows written one
INSERT per table: every column type, awkward text, JSON documents in their key order, a
``None`` in a JSON column (JSON ``null``) and in a plain one (SQL ``NULL``), bytes, a
parent and its children in one statement. On PostgreSQL the batch is one statement whose
rows travel as JSON (one parameter per table); elsewhere it is the plain INSERTs."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from app.core.context import AppContext
from app.core.db import insert_rows, write_batch
from app.core.ids import new_id
from app.deployments.models import Deployment, DeploymentTarget
from app.idempotency.models import IdempotencyRecord
from app.runs.models import Run

AWKWARD = "quote ' double \" back \\ slash\nnew line\ttab, ü € 😀, %(b0)s, $1, {json}"
# Key order as given (a json column keeps it); nested, unicode, numbers, null, booleans.
DOCUMENT = {"zeta": 1, "alpha": {"b": [1, "x", None], "a": 2.5}, "ü": AWKWARD, "ok": True}
AT = dt.datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def rows(prefix: str) -> tuple[Run, Deployment, list[DeploymentTarget], IdempotencyRecord]:
    run = Run(
        id=f"{prefix}-run",
        kind="deployment",
        status="queued",
        params=DOCUMENT,
        requested_by=AWKWARD,
        environment=None,
        enqueue_count=1,
        created_at=AT,
        updated_at=AT,
        event_seq=1,
    )
    deployment = Deployment(
        id=run.id,
        kind="deployment",
        environment="staging",
        ref=None,
        description=AWKWARD,
        checklist=["one", AWKWARD],
        required_checklist=[],
        backup=True,
        auto_rollback=False,
        requested_by="ci",
        request=DOCUMENT,
        created_at=AT,
        evidence=None,
    )
    targets = [
        DeploymentTarget(
            id=f"{prefix}-t{position}",
            deployment_id=run.id,
            position=position,
            environment="staging",
            service=f"svc-{position}",
            version="1.0.0",
            previous_version=None if position else AWKWARD[:100],
            touched=bool(position),
            state="queued",
            created_at=AT,
        )
        for position in range(3)
    ]
    record = IdempotencyRecord(
        id=f"{prefix}-key",
        token_id="t",
        key_hash=prefix,
        fingerprint="f",
        method="POST",
        path="/v1/deployments",
        state="completed",
        locked_until=None,
        response_status=201,
        response_headers={"location": "/v1/deployments/x", "a": "b"},
        response_body=bytes(range(256)) + b"\\x00'",
        created_at=AT,
        expires_at=AT + dt.timedelta(days=1),
    )
    return run, deployment, targets, record


async def write(context: AppContext, prefix: str, *, batch: bool) -> list[str]:
    """Write one set of rows; what the engine sent (each statement's first word)."""
    run, deployment, targets, record = rows(prefix)
    sent: list[str] = []

    def seen(*args: Any) -> None:
        word = str(args[2]).split(None, 1)[0].upper()
        if word != "BEGIN":  # SQLite's own BEGIN IMMEDIATE
            sent.append(word)

    engine = context.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with context.unit_of_work() as uow:
            if batch:
                async with write_batch(uow.session):
                    for objects in ([run], [deployment], targets, [record]):
                        await insert_rows(uow.session, objects)
                    assert sent == []  # nothing written before the block ends
            else:
                for objects in ([run], [deployment], targets, [record]):
                    await insert_rows(uow.session, objects)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return sent


TABLES = {
    "run": "id",
    "deployment": "id",
    "deployment_target": "id",
    "idempotency_key": "id",
}


async def stored(context: AppContext, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the set, each column as the database's own text of it (a json column
    as stored, byte for byte), ids without their prefix."""
    found: dict[str, list[dict[str, Any]]] = {}
    async with context.engine.connect() as conn:
        for table, key in TABLES.items():
            empty = await conn.execute(text(f"SELECT * FROM {table} LIMIT 0"))  # noqa: S608
            names = [c for c in empty.keys() if c != "key_hash"]  # noqa: SIM118
            as_text = ", ".join(  # bytes as they are
                c if c == "response_body" else f"CAST({c} AS TEXT) AS {c}" for c in names
            )
            where = "deployment_id" if table == "deployment_target" else key
            result = await conn.execute(
                text(f"SELECT {as_text} FROM {table} WHERE {where} LIKE :p ORDER BY {key}"),  # noqa: S608
                {"p": f"{prefix}-%"},
            )
            found[table] = [
                {
                    name: value.replace(prefix, "<id>") if isinstance(value, str) else value
                    for name, value in row._mapping.items()
                }
                for row in result
            ]
    return found


async def test_a_batch_writes_what_plain_inserts_write(context: AppContext) -> None:
    plain_sent = await write(context, "plain", batch=False)
    batch_sent = await write(context, "batch", batch=True)
    plain, batch = await stored(context, "plain"), await stored(context, "batch")
    assert [len(plain[table]) for table in TABLES] == [1, 1, 3, 1]
    assert batch == plain
    assert plain_sent == ["INSERT"] * 4
    if context.engine.dialect.name == "postgresql":
        assert batch_sent == ["WITH"]  # the four INSERTs in one statement
        deployment = plain["deployment"][0]
        # The JSON text as the JSON type writes it: key order kept, nothing re-encoded.
        assert deployment["request"] == json.dumps(DOCUMENT)
        assert deployment["request"].startswith('{"zeta": 1, "alpha": {"b": [1, "x", null]')
        assert deployment["evidence"] == "null"  # JSON null, not SQL NULL
        assert deployment["ref"] is None
    else:
        assert batch_sent == ["INSERT"] * 4

    # And read back through the models: the values given.
    async with context.sessionmaker() as session:
        deployment = await session.get(Deployment, "batch-run")
        run = await session.get(Run, "batch-run")
        record = await session.get(IdempotencyRecord, "batch-key")
        assert deployment is not None
        assert run is not None
        assert record is not None
        assert deployment.request == DOCUMENT
        assert list(deployment.request) == list(DOCUMENT)
        assert deployment.description == AWKWARD
        assert deployment.evidence is None
        assert deployment.created_at == AT
        assert deployment.created_at.tzinfo == dt.UTC
        assert run.params == DOCUMENT
        assert run.environment is None
        assert record.response_body == bytes(range(256)) + b"\\x00'"
        assert record.response_headers == {"location": "/v1/deployments/x", "a": "b"}


async def test_a_failed_batch_writes_nothing(context: AppContext) -> None:
    """A row the database refuses (a target whose deployment does not exist) fails the
    whole statement: neither the run before it nor the target is written."""
    run, _, targets, _ = rows("orphan")
    targets[0].deployment_id = new_id()
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        async with context.unit_of_work() as uow, write_batch(uow.session):
            await insert_rows(uow.session, [run])
            await insert_rows(uow.session, targets[:1])
    assert (await stored(context, "orphan"))["run"] == []
