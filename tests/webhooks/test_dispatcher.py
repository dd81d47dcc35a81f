"""The dispatcher as the reconciler of deliveries, and what a delivery job records when
its lease was taken over: a batch whose job was lost is leased again once its lease
expired and delivered; the dispatcher loop outlives a database it cannot reach and
carries on when it answers again; a job slower than its lease logs its attempt with the
next number, beside the new holder's, and leaves the state to the new holder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from arq.constants import job_key_prefix
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from app.bootstrap import build_context
from app.core.context import AppContext
from app.core.settings import Settings
from app.webhooks import delivery as webhook_delivery
from app.webhooks.dispatcher import dispatch_once, fan_out, lease_due, run_dispatcher
from app.webhooks.models import WebhookAttempt, WebhookDelivery
from tests.factories import IssuedToken
from tests.helpers import free_port, run_worker_burst
from tests.webhooks.conftest import (
    Received,
    Receiver,
    create_webhook,
    fast_settings,
    start_receiver,
)
from tests.webhooks.test_delivery import emit, ping_data

SHORT_LEASE = 1.0


@pytest.fixture
async def short_lease(settings: Settings) -> AsyncIterator[AppContext]:
    """A context whose leases last ``SHORT_LEASE`` seconds (below the settings' minimum,
    so a test can wait one out)."""
    quick = fast_settings(settings)
    quick = quick.model_copy(
        update={"webhooks": quick.webhooks.model_copy(update={"lease_seconds": SHORT_LEASE})}
    )
    context = build_context(quick)
    yield context
    await context.aclose()


async def forget_jobs(context: AppContext) -> None:
    """Remove the delivery jobs a dispatcher loop of a test enqueued (arq's job keys are
    not under the test's key prefix) and empty the test's queue."""
    async with context.sessionmaker() as session:
        tokens = (await session.scalars(select(WebhookDelivery.lease_token))).all()
    keys = [f"{job_key_prefix}webhooks:{t}" for t in tokens if t]
    await context.redis.delete(context.settings.queue_name, *keys)


async def said(caplog: pytest.LogCaptureFixture, text: str, loop: asyncio.Task[None]) -> None:
    """Until the dispatcher logged ``text`` (it logs after the round that recovered)."""
    deadline = asyncio.get_running_loop().time() + 5
    while not any(text in r.getMessage() for r in caplog.records):
        assert not loop.done(), loop
        assert asyncio.get_running_loop().time() < deadline, caplog.text
        await asyncio.sleep(0.05)


async def rows(context: AppContext) -> tuple[list[WebhookDelivery], list[WebhookAttempt]]:
    async with context.sessionmaker() as session:
        found = list((await session.scalars(select(WebhookDelivery))).all())
        attempts = (await session.scalars(select(WebhookAttempt))).all()
    return found, sorted(attempts, key=lambda a: a.number)


async def test_a_batch_whose_job_was_lost_is_leased_again_and_delivered(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    short_lease: AppContext,
) -> None:
    await create_webhook(client, operator, url=receiver.url, event_types=["webhook.test"])
    event_id = await emit(short_lease, "webhook.test", ping_data())
    assert await fan_out(short_lease) == (1, 1)
    [lost] = await lease_due(short_lease)  # ... and its job never enqueued (Redis flushed)

    assert await lease_due(short_lease) == []  # leased: not handed out twice
    await asyncio.sleep(SHORT_LEASE + 0.2)
    dispatched = await dispatch_once(short_lease)  # the lease expired: leased again
    assert dispatched.batches == 1
    [again] = (await rows(short_lease))[0]
    assert again.lease_token not in (None, lost)
    await run_worker_burst(short_lease.settings)  # a real worker runs the new job

    [done], attempts = await rows(short_lease)
    assert done.status == "succeeded"
    # once, or more if this slow machine let the short lease expire again meanwhile
    assert [a.number for a in attempts] == list(range(1, done.attempts + 1))
    assert {r.webhook_id for r in receiver.received} == {event_id}
    sent = len(receiver.received)
    assert sent == len(attempts)
    # the lost job, if it ever runs, finds nothing of its own
    assert await webhook_delivery.deliver_batch(short_lease, lost) == 0
    assert len(receiver.received) == sent


class Forwarder:
    """A TCP port that refuses connections until :meth:`open` forwards it to the real
    database server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.pipes):
            task.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_the_dispatcher_loop_outlives_an_unreachable_database(
    settings: Settings,
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop's context points at a loopback port where nothing listens: every round
    fails with a database error, the loop waits; once the port forwards to the real
    server, the same loop fans out and leases."""
    await create_webhook(client, operator, url=receiver.url, event_types=["webhook.test"])
    await emit(context, "webhook.test", ping_data())
    real = make_url(settings.database_url_value)
    forwarder = Forwarder(real.host or "127.0.0.1", real.port or 5432)
    away = fast_settings(settings).model_copy(
        update={
            "database_url": SecretStr(
                real.set(host="127.0.0.1", port=forwarder.port).render_as_string(
                    hide_password=False
                )
            )
        }
    )
    unreachable = build_context(away)
    caplog.set_level(logging.INFO, logger="app.webhooks.dispatcher")
    loop = asyncio.create_task(run_dispatcher(unreachable, 0.05))
    try:
        await asyncio.sleep(1.5)  # several rounds, each refused
        assert not loop.done(), loop
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings  # told once, not once per round
        assert "events wait in the outbox" in warnings[0].getMessage()
        assert (await rows(context))[0] == []

        await forwarder.open()  # the database answers again
        deadline = asyncio.get_running_loop().time() + 10
        while not (found := (await rows(context))[0]) or found[0].lease_token is None:
            assert not loop.done(), loop
            assert asyncio.get_running_loop().time() < deadline, found
            await asyncio.sleep(0.1)
        await said(caplog, "running again", loop)
        assert not loop.done()
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await unreachable.aclose()
        await forwarder.close()
        await forget_jobs(context)


class SlowFirst(Receiver):
    """Answers its first request only after ``delay`` seconds (longer than a lease)."""

    delay = SHORT_LEASE * 6

    async def handle(self, request: web.Request) -> web.Response:
        if self.received:
            return await super().handle(request)
        self.received.append(Received(dict(request.headers.items()), await request.read()))
        self.arrived.set()
        await asyncio.sleep(self.delay)
        return web.Response(status=200, body=b"late")


async def _leased_again(context: AppContext, *, within: float) -> list[str]:
    """The due deliveries once a lease has expired (on a loaded machine the clock read by
    the lease query may lag the test's by a little), still before the slow answer."""
    deadline = asyncio.get_running_loop().time() + within
    while not (due := await lease_due(context)):
        assert asyncio.get_running_loop().time() < deadline, "the lease never expired"
        await asyncio.sleep(0.1)
    return due


async def test_a_job_slower_than_its_lease_logs_its_attempt_with_the_next_number(
    client: httpx.AsyncClient, operator: IssuedToken, short_lease: AppContext
) -> None:
    slow = SlowFirst()
    runner = await start_receiver(slow)
    try:
        await create_webhook(client, operator, url=slow.url, event_types=["webhook.test"])
        event_id = await emit(short_lease, "webhook.test", ping_data())
        await fan_out(short_lease)
        [first] = await lease_due(short_lease)
        late = asyncio.create_task(webhook_delivery.deliver_batch(short_lease, first))
        await slow.wait_for(1)
        await asyncio.sleep(SHORT_LEASE)  # the lease expires while it waits
        [second] = await _leased_again(short_lease, within=SHORT_LEASE * 4)
        assert await webhook_delivery.deliver_batch(short_lease, second) == 1
        [delivery], attempts = await rows(short_lease)
        assert delivery.status == "succeeded"
        assert [a.number for a in attempts] == [1]

        assert await late == 1  # the first job's answer comes in at last
        [delivery], attempts = await rows(short_lease)
    finally:
        await runner.cleanup()
    assert [r.webhook_id for r in slow.received] == [event_id, event_id]
    # two requests, two attempts in the log, numbered in the order they were recorded
    assert [a.number for a in attempts] == [1, 2]
    assert all(a.succeeded for a in attempts)
    assert delivery.attempts == 2
    # the state stays the new holder's: succeeded once, no lease
    assert delivery.status == "succeeded"
    assert delivery.lease_token is None


class Slow(Receiver):
    """Answers every request after ``delay`` seconds."""

    delay = 0.8

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(dict(request.headers.items()), await request.read()))
        self.arrived.set()
        await asyncio.sleep(self.delay)
        return web.Response(status=200, body=b"ok")


async def test_a_job_cancelled_twice_mid_request_still_records_the_attempt(
    client: httpx.AsyncClient, operator: IssuedToken, context: AppContext
) -> None:
    """A stop may cancel a job again while it waits for its request (a worker's close
    cancels what it gathers; a CI run saw the delivery left pending): the request is
    still answered and recorded, and the job then ends cancelled."""
    slow = Slow()
    runner = await start_receiver(slow)
    try:
        await create_webhook(client, operator, url=slow.url, event_types=["webhook.test"])
        await emit(context, "webhook.test", ping_data())
        await fan_out(context)
        [token] = await lease_due(context)
        job = asyncio.create_task(webhook_delivery.deliver_batch(context, token))
        await slow.wait_for(1)
        job.cancel()
        await asyncio.sleep(0.1)
        job.cancel()  # the second one, while the job waits for the answer
        with pytest.raises(asyncio.CancelledError):
            await job
        [delivery], attempts = await rows(context)
    finally:
        await runner.cleanup()
    assert delivery.status == "succeeded"
    assert [a.succeeded for a in attempts] == [True]


async def test_a_worker_stopping_mid_request_still_records_the_attempt(
    settings: Settings, client: httpx.AsyncClient, operator: IssuedToken
) -> None:
    """Stopping a worker cancels its running jobs (arq's way); a delivery job whose
    request is out finishes it and records it, so the receiver does not get it again
    after the lease and the attempt is in the log."""
    from workers.main import create_worker, stop_worker

    slow = Slow()
    runner = await start_receiver(slow)
    quick = fast_settings(settings)
    worker = create_worker(quick, handle_signals=False, poll_delay=0.02)
    task = asyncio.create_task(worker.main())
    context = build_context(quick)
    try:
        await create_webhook(client, operator, url=slow.url, event_types=["webhook.test"])
        event_id = await emit(context, "webhook.test", ping_data())
        await slow.wait_for(1)
        await stop_worker(worker, task)  # while the receiver has not answered yet
        [delivery], attempts = await rows(context)
    finally:
        await stop_worker(worker, task)
        await context.aclose()
        await runner.cleanup()
    assert [r.webhook_id for r in slow.received] == [event_id]
    seen = (delivery.status, delivery.attempts, delivery.last_error, attempts)
    assert delivery.status == "succeeded", seen
    assert delivery.lease_token is None
    assert [(a.number, a.status_code) for a in attempts] == [(1, 200)]


async def test_the_dispatcher_loop_outlives_a_row_it_cannot_read(
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An endpoint row whose filter is not a list (written behind the API's back) makes
    every fan-out fail: the loop logs it once and goes on, and dispatches once the row
    is repaired."""
    hook = await create_webhook(client, operator, url=receiver.url, event_types=["webhook.test"])
    async with context.unit_of_work() as uow:
        await uow.session.execute(
            text("UPDATE webhook_endpoint SET event_types = '5' WHERE id = :id"),
            {"id": hook["id"]},
        )
    await emit(context, "webhook.test", ping_data())
    caplog.set_level(logging.INFO, logger="app.webhooks.dispatcher")
    loop = asyncio.create_task(run_dispatcher(context, 0.05))
    try:
        await asyncio.sleep(1.0)  # several rounds, each failing
        assert not loop.done(), loop
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors
        assert errors[0].exc_info is not None
        assert (await rows(context))[0] == []

        async with context.unit_of_work() as uow:
            await uow.session.execute(
                text("""UPDATE webhook_endpoint SET event_types = '["webhook.test"]'"""),
            )
        deadline = asyncio.get_running_loop().time() + 10
        while not (await rows(context))[0]:
            assert not loop.done(), loop
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        await said(caplog, "running again", loop)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await forget_jobs(context)
