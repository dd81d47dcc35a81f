"""Delivery end to end: outbox event → dispatcher → delivery job → a real receiver that
verifies every request with the public ``standardwebhooks`` and ``svix`` libraries."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import standardwebhooks
import svix.webhooks
from sqlalchemy import select

from app.core.context import AppContext
from app.outbox.service import add_event
from app.webhooks.models import WebhookDelivery
from tests.factories import IssuedToken
from tests.webhooks.conftest import Receiver, create_webhook


async def emit(context: AppContext, type: str, data: dict[str, Any]) -> str:
    async with context.unit_of_work() as uow:
        event = await add_event(uow.session, type, data)
    return event.id


def ping_data(endpoint_id: str = "e") -> dict[str, Any]:
    return {"endpoint_id": endpoint_id, "message": "m", "links": {"self": "/v1/webhooks/e"}}


def verify_both(secret: str, received: Any) -> dict[str, Any]:
    """Verified by both public libraries, unmodified; returns the payload."""
    payload: dict[str, Any] = standardwebhooks.Webhook(secret).verify(
        received.body, received.headers
    )
    # svix's verify returns nothing and raises WebhookVerificationError on a bad signature.
    svix.webhooks.Webhook(secret).verify(received.body, received.headers)
    return payload


async def deliveries(context: AppContext) -> list[WebhookDelivery]:
    async with context.sessionmaker() as session:
        return list((await session.scalars(select(WebhookDelivery))).all())


async def settle(context: AppContext, status: str, count: int, within: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = [d for d in await deliveries(context) if d.status == status]
        if len(found) >= count:
            return
        assert loop.time() < deadline, f"{len(found)} of {count} deliveries {status}"
        await asyncio.sleep(0.05)


async def test_events_are_signed_and_verified_by_both_libraries(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    fast_worker: AppContext,
) -> None:
    hook = await create_webhook(
        client, operator, url=receiver.url, event_types=["webhook.*"], headers={"X-Team": "ops"}
    )
    assert hook["secret"].startswith("whsec_")
    sent = [
        await emit(
            fast_worker, "webhook.test", {"endpoint_id": f"e{i}", "message": "m", "links": {}}
        )
        for i in range(5)
    ]
    await emit(fast_worker, "webhook_endpoint.disabled", {"id": "not for this endpoint"})
    got = await receiver.wait_for(5)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 5
    assert sorted(r.webhook_id for r in got) == sorted(sent)
    for item in got:
        payload = verify_both(hook["secret"], item)
        assert payload["type"] == "webhook.test"
        assert set(payload) == {"type", "timestamp", "data"}
        assert item.headers["X-Team"] == "ops"
        assert item.headers["Content-Type"] == "application/json"
    await settle(fast_worker, "succeeded", 5)


async def test_rotation_signs_with_both_secrets(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    fast_worker: AppContext,
) -> None:
    hook = await create_webhook(client, operator, url=receiver.url)
    response = await client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret", headers=operator.headers
    )
    assert response.status_code == 200, response.text
    new_secret = response.json()["secret"]
    assert new_secret != hook["secret"]
    await emit(fast_worker, "webhook.test", ping_data())
    (item,) = await receiver.wait_for(1)
    assert len(item.headers["webhook-signature"].split(" ")) == 2
    verify_both(hook["secret"], item)
    verify_both(new_secret, item)


async def test_failed_attempts_follow_the_schedule_then_deliver(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    fast_worker: AppContext,
) -> None:
    receiver.answer(500, 503, 200)
    hook = await create_webhook(client, operator, url=receiver.url)
    event_id = await emit(fast_worker, "webhook.test", ping_data())
    got = await receiver.wait_for(3)
    assert {r.webhook_id for r in got} == {event_id}
    assert len({r.headers["webhook-timestamp"] for r in got}) >= 1
    await settle(fast_worker, "succeeded", 1)
    (delivery,) = await deliveries(fast_worker)
    response = await client.get(f"/v1/webhook-deliveries/{delivery.id}", headers=operator.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["attempts"] == 3
    assert body["status"] == "succeeded"
    assert [a["status_code"] for a in body["attempt_log"]] == [500, 503, 200]
    assert body["webhook_id"] == event_id
    listing = await client.get(
        f"/v1/webhooks/{hook['id']}/deliveries?status=succeeded", headers=operator.headers
    )
    assert [d["id"] for d in listing.json()["items"]] == [delivery.id]


async def test_gone_disables_the_endpoint(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    fast_worker: AppContext,
) -> None:
    receiver.answer(410)
    hook = await create_webhook(client, operator, url=receiver.url, event_types=["webhook.*"])
    await emit(fast_worker, "webhook.test", ping_data())
    await receiver.wait_for(1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        body = (await client.get(f"/v1/webhooks/{hook['id']}", headers=operator.headers)).json()
        if not body["enabled"]:
            break
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    assert body["disabled_reason"] == "gone"
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1  # 410 is not retried


async def test_test_event_returns_the_attempt(
    client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    hook = await create_webhook(client, operator, url=receiver.url)
    response = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=operator.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["attempt"]["status_code"] == 200
    assert body["attempt"]["succeeded"]
    assert body["delivery"]["status"] == "succeeded"
    (item,) = receiver.received
    assert verify_both(hook["secret"], item)["type"] == "webhook.test"
    metrics = (await client.get("/metrics")).text
    assert 'formula_ops_webhook_attempts_total{outcome="success",trigger="test"}' in metrics
    assert "formula_ops_webhook_attempt_duration_seconds_count" in metrics


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    from tests.webhooks.conftest import start_receiver

    elsewhere = Receiver()
    runner = await start_receiver(elsewhere)
    try:
        receiver.answer(307, Location=elsewhere.url)
        hook = await create_webhook(client, operator, url=receiver.url)
        response = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=operator.headers)
        attempt = response.json()["attempt"]
        assert attempt["status_code"] == 307
        assert not attempt["succeeded"]
        assert attempt["error"] == "redirect (307) not followed"
        assert len(receiver.received) == 1
        assert elsewhere.received == []
    finally:
        await runner.cleanup()
