"""The alerts table as a dedupe store: one row per group and fingerprint, a re-send
counts and updates it, two copies written at once still make one row."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from app.alerts import mapping, store
from app.alerts.models import Alert
from app.alerts.store import AlertRow
from app.core.context import AppContext
from app.core.db import utcnow

GROUP = '{}/{severity="critical"}:{alertname="ProbeFailure"}'


def row(fingerprint: str, status: str = "firing", **labels: str) -> AlertRow:
    return AlertRow(
        fingerprint=fingerprint,
        status=status,
        alertname="ProbeFailure",
        labels={"alertname": "ProbeFailure", **labels},
        annotations={"summary": "probe failed"},
        starts_at=utcnow(),
        ends_at=None,
        generator_url="http://127.0.0.1:9090/graph",
        severity="P1",
        threshold=None,
    )


async def write(
    context: AppContext, rows: list[AlertRow], group: str = GROUP
) -> dict[str, store.Stored]:
    async with context.unit_of_work() as uow:
        return await store.upsert(
            uow.session,
            group_key=group,
            group_key_hash=mapping.group_key_hash(group),
            receiver="formula-ops",
            rows=rows,
            now=utcnow(),
        )


async def all_alerts(context: AppContext) -> list[Alert]:
    async with context.sessionmaker() as session:
        return list((await session.scalars(select(Alert).order_by(Alert.fingerprint))).all())


async def test_a_resend_updates_the_row_and_counts(context: AppContext) -> None:
    first = await write(context, [row("aaa"), row("bbb")])
    assert {f: s.received_count for f, s in first.items()} == {"aaa": 1, "bbb": 1}
    again = await write(context, [row("aaa", status="resolved"), row("bbb")])
    assert {f: s.received_count for f, s in again.items()} == {"aaa": 2, "bbb": 2}
    assert {f: s.id for f, s in again.items()} == {f: s.id for f, s in first.items()}
    alerts = await all_alerts(context)
    assert [(a.fingerprint, a.status, a.received_count) for a in alerts] == [
        ("aaa", "resolved", 2),
        ("bbb", "firing", 2),
    ]
    assert alerts[0].group_key == GROUP
    assert alerts[0].group_key_hash == mapping.group_key_hash(GROUP)


async def test_the_upsert_tells_what_a_row_said_before(context: AppContext) -> None:
    """What tells a re-send from a change: the status, severity and start it had."""
    firing = row("aaa")
    first = await write(context, [firing])
    assert first["aaa"].previous is None
    changed = row("aaa", status="resolved")
    changed.severity = "P2"
    again = await write(context, [changed])
    assert again["aaa"].previous == store.Previous("firing", "P1", firing.starts_at)
    third = await write(context, [changed])
    assert third["aaa"].previous == store.Previous("resolved", "P2", changed.starts_at)


async def test_one_fingerprint_in_two_groups_is_two_alerts(context: AppContext) -> None:
    await write(context, [row("aaa")])
    await write(context, [row("aaa")], group='{}:{alertname="Other"}')
    alerts = await all_alerts(context)
    assert len(alerts) == 2
    assert len({a.group_key_hash for a in alerts}) == 2


async def test_copies_written_at_once_make_one_row_each(context: AppContext) -> None:
    rows = [row(f"fp{i:03d}") for i in range(30)]
    results = await asyncio.gather(*(write(context, rows) for _ in range(4)))
    counts = sorted(s.received_count for result in results for s in result.values())
    assert counts == sorted([1, 2, 3, 4] * 30)
    async with context.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Alert)) == 30
        assert set((await session.scalars(select(Alert.received_count))).all()) == {4}


async def test_large_notifications_are_written_in_batches(context: AppContext) -> None:
    rows = [row(f"fp{i:05d}") for i in range(store.BATCH * 2 + 7)]
    stored = await write(context, rows)
    assert len(stored) == len(rows)
    assert all(s.received_count == 1 for s in stored.values())
