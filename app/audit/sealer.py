"""The audit sealer: links committed events into the hash chain, in the order it sees
them committed, shortly after their commit.

Writers append events unsealed and share no lock (:func:`app.audit.service.record`), as
a Certificate Transparency log accepts entries before it sequences them. One sealer at a
time — a transaction-level advisory lock on PostgreSQL, the database's write lock on
SQLite — takes the committed unsealed events (oldest first), gives each the next ``seq``,
its predecessor's hash and its own, and moves the chain head, in one transaction.
Every worker process and every API process runs :func:`run_sealer`; whichever holds the
lock seals and the others find nothing to do, so the trail is sealed while any of them
runs. An event is sealed within the interval plus one pass of its commit (the bound
``audit_seal_bound_seconds`` that ``verify`` holds the trail to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from dataclasses import dataclass, field

from sqlalchemy import Table, bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from app.audit.service import HEAD_ID, compute_hash
from app.core.db import utcnow, write_engine
from app.core.metrics import Metrics

logger = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key naming "the audit sealer" (any fixed 64-bit number).
SEAL_LOCK_KEY = 0x466F_4175_6469_7453
BATCH = 500

_events: Table = AuditEvent.__table__  # type: ignore[assignment]
_head: Table = AuditChainHead.__table__  # type: ignore[assignment]
_SEAL = (
    update(_events)
    .where(_events.c.id == bindparam("b_id"), _events.c.seq.is_(None))
    .values(
        seq=bindparam("b_seq"),
        prev_hash=bindparam("b_prev_hash"),
        hash=bindparam("b_hash"),
        sealed_at=bindparam("b_sealed_at"),
    )
)


@dataclass
class Sealed:
    """What one call of :func:`seal_pending` sealed."""

    count: int = 0
    delays: list[float] = field(default_factory=list)  # creation to sealing, per event
    locked_out: bool = False  # another sealer held the lock


async def oldest_unsealed_age(engine: AsyncEngine) -> float | None:
    """Seconds since the oldest committed unsealed event was created; None when none."""
    async with engine.connect() as conn:
        oldest = await conn.scalar(
            select(_events.c.created_at)
            .where(_events.c.seq.is_(None))
            .order_by(_events.c.created_at)
            .limit(1)
        )
    if oldest is None:
        return None
    return max(0.0, (utcnow() - oldest).total_seconds())  # type: ignore[no-any-return]


async def seal_pending(engine: AsyncEngine, *, batch: int = BATCH) -> Sealed:
    """Seal every committed unsealed event, ``batch`` per transaction; returns at once
    when another sealer holds the lock."""
    done = Sealed()
    writer = write_engine(engine)
    postgres = engine.dialect.name == "postgresql"
    while True:
        async with writer.begin() as conn:
            if postgres and not await conn.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SEAL_LOCK_KEY}
            ):
                done.locked_out = True
                return done
            rows = (
                await conn.execute(
                    select(_events)
                    .where(_events.c.seq.is_(None))
                    .order_by(_events.c.created_at, _events.c.id)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return done
            head = (
                await conn.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == HEAD_ID))
            ).first()
            seq, prev_hash = (head.seq, head.hash) if head is not None else (0, GENESIS_HASH)
            now = utcnow()
            params = []
            for row in rows:
                seq += 1
                sealed = types.SimpleNamespace(**row._asdict())
                sealed.seq, sealed.prev_hash = seq, prev_hash
                digest = compute_hash(sealed)
                params.append(
                    {
                        "b_id": row.id,
                        "b_seq": seq,
                        "b_prev_hash": prev_hash,
                        "b_hash": digest,
                        "b_sealed_at": now,
                    }
                )
                done.delays.append(max(0.0, (now - row.created_at).total_seconds()))
                prev_hash = digest
            await conn.execute(_SEAL, params)
            if head is None:
                await conn.execute(insert(_head).values(id=HEAD_ID, seq=seq, hash=prev_hash))
            else:
                await conn.execute(
                    update(_head).where(_head.c.id == HEAD_ID).values(seq=seq, hash=prev_hash)
                )
        done.count += len(rows)
        if len(rows) < batch:
            return done


async def seal_once(engine: AsyncEngine, metrics: Metrics | None = None) -> Sealed:
    """One pass: nothing but a cheap read when every event is sealed."""
    if await oldest_unsealed_age(engine) is None:
        return Sealed()
    sealed = await seal_pending(engine)
    if metrics is not None:
        for delay in sealed.delays:
            metrics.audit_seal_delay.observe(delay)
    return sealed


async def run_sealer(engine: AsyncEngine, metrics: Metrics | None, *, interval: float) -> None:
    """Seal every ``interval`` seconds until cancelled; a failed pass (the database
    away) is logged once and retried on the next."""
    failing = False
    while True:
        try:
            await seal_once(engine, metrics)
            if failing:
                logger.info("audit sealing resumed")
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                logger.warning("audit sealing failed (%s); retrying", type(exc).__name__)
            failing = True
        await asyncio.sleep(interval)


def start_sealer(
    engine: AsyncEngine, metrics: Metrics | None, *, interval: float
) -> asyncio.Task[None]:
    return asyncio.create_task(run_sealer(engine, metrics, interval=interval), name="audit-sealer")


async def stop_sealer(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
