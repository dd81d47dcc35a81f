"""Endpoints through the API: validation, secrets that never come back, ETags, the audit
trail, redelivery with the same webhook-id, the failing streak that disables."""

from __future__ import annotations

import asyncio
import json

import httpx
import standardwebhooks
from sqlalchemy import select

from app.bootstrap import build_context
from app.core.context import AppContext
from app.core.settings import WebhookSettings
from app.main import create_app
from app.outbox.models import OutboxEvent
from app.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.factories import IssuedToken
from tests.helpers import audit_events_after, last_audit_seq
from tests.webhooks.conftest import Receiver, create_webhook
from tests.webhooks.test_delivery import deliveries, emit, ping_data, settle


async def test_create_read_list_never_show_secrets(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    seq = await last_audit_seq(context)
    hook = await create_webhook(
        client,
        operator,
        url=receiver.url + "?token=query-secret-value",
        headers={"Authorization": "Bearer header-secret-value"},
        description="status page",
    )
    secret = hook["secret"]
    assert hook["header_names"] == ["Authorization"]
    assert "query-secret-value" not in hook["url"]
    read = await client.get(f"/v1/webhooks/{hook['id']}", headers=operator.headers)
    listed = await client.get("/v1/webhooks", headers=operator.headers)
    audit = await audit_events_after(context, seq)
    async with context.sessionmaker() as session:
        row = await session.get(WebhookEndpoint, hook["id"])
    assert row is not None
    stored = json.dumps([row.secret_sealed, row.headers_sealed])
    for text in (read.text, listed.text, json.dumps([e.summary for e in audit]), stored):
        for value in (secret, secret.removeprefix("whsec_"), "header-secret-value"):
            assert value not in text
        assert "query-secret-value" not in text.replace(row.url or "", "")
    assert read.headers["ETag"]
    assert [e.action for e in audit] == ["webhook.create"]


async def test_invalid_bodies_are_refused(
    client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    cases = [
        {"url": "ftp://127.0.0.1/x"},
        {"url": "http://user:pass@127.0.0.1/x"},
        {"url": "http://127.0.0.2/x"},  # loopback outside the allow-list
        {"url": "http://169.254.169.254/latest/meta-data"},
        {"url": "http://10.0.0.1/"},
        {"url": receiver.url, "event_types": ["no_such.event"]},
        {"url": receiver.url, "event_types": ["nothing.*"]},
        {"url": receiver.url, "event_types": ["Bad Type"]},
        {"url": receiver.url, "event_types": []},
        {"url": receiver.url, "headers": {"webhook-id": "x"}},
        {"url": receiver.url, "headers": {"Host": "elsewhere"}},
        {"url": receiver.url, "headers": {"X-Bad": "line\r\nbreak"}},
        {"url": receiver.url, "headers": {"bad name": "x"}},
        {"url": receiver.url, "format": "xml"},
        {"url": receiver.url, "surprise": 1},
    ]
    for body in cases:
        response = await client.post("/v1/webhooks", json=body, headers=operator.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    listed = await client.get("/v1/webhooks", headers=operator.headers)
    assert listed.json()["items"] == []


async def test_https_is_required_unless_allowed(
    context: AppContext, operator: IssuedToken, receiver: Receiver
) -> None:
    settings = context.settings.model_copy(
        update={"webhooks": WebhookSettings(allowed_networks=["127.0.0.1/32"], allow_http=False)}
    )
    strict = build_context(settings)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, context=strict)),
            base_url="http://testserver",
        ) as http:
            response = await http.post(
                "/v1/webhooks", json={"url": receiver.url}, headers=operator.headers
            )
    finally:
        await strict.aclose()
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["type"] == "unsafe_scheme"


async def test_viewers_and_deployers_are_refused(
    context: AppContext, client: httpx.AsyncClient, deployer: IssuedToken, receiver: Receiver
) -> None:
    for method, path in (("POST", "/v1/webhooks"), ("GET", "/v1/webhooks")):
        response = await client.request(
            method, path, json={"url": receiver.url}, headers=deployer.headers
        )
        assert response.status_code == 403, response.text


async def test_patch_with_etags_and_delete(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    hook = await create_webhook(client, operator, url=receiver.url)
    path = f"/v1/webhooks/{hook['id']}"
    tag = (await client.get(path, headers=operator.headers)).headers["ETag"]
    changed = await client.patch(
        path,
        json={"description": "changed", "event_types": ["webhook.*"]},
        headers={**operator.headers, "If-Match": tag},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["event_types"] == ["webhook.*"]
    stale = await client.patch(
        path, json={"description": "again"}, headers={**operator.headers, "If-Match": tag}
    )
    assert stale.status_code == 412, stale.text
    disabled = await client.patch(path, json={"enabled": False}, headers=operator.headers)
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "manual"
    seq = await last_audit_seq(context)
    deleted = await client.delete(path, headers=operator.headers)
    assert deleted.status_code == 204
    assert (await client.get(path, headers=operator.headers)).status_code == 404
    assert [e.action for e in await audit_events_after(context, seq)] == ["webhook.delete"]


async def test_redelivery_keeps_the_webhook_id_and_signs_anew(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    fast_worker: AppContext,
) -> None:
    hook = await create_webhook(client, operator, url=receiver.url, event_types=["webhook.*"])
    event_id = await emit(fast_worker, "webhook.test", ping_data())
    (first,) = await receiver.wait_for(1)
    await settle(fast_worker, "succeeded", 1)
    (delivery,) = await deliveries(fast_worker)
    await asyncio.sleep(1.1)  # a later second: a new timestamp
    response = await client.post(
        f"/v1/webhook-deliveries/{delivery.id}/redeliver", headers=operator.headers
    )
    assert response.status_code == 202, response.text
    _, second = await receiver.wait_for(2)
    assert first.webhook_id == second.webhook_id == event_id
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    standardwebhooks.Webhook(hook["secret"]).verify(second.body, second.headers)
    await settle(fast_worker, "succeeded", 1)
    detail = (
        await client.get(f"/v1/webhook-deliveries/{delivery.id}", headers=operator.headers)
    ).json()
    assert [a["trigger"] for a in detail["attempt_log"]] == ["scheduled", "redelivery"]
    assert detail["event"]["type"] == "webhook.test"


async def test_a_long_failing_streak_disables_with_audit_and_event(
    settings: object,
    context: AppContext,
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
) -> None:
    from app.bootstrap import build_context
    from tests.webhooks.conftest import fast_settings
    from workers.main import create_worker, stop_worker

    receiver.answer(500)
    quick = fast_settings(context.settings, disable_after_seconds=0.5)
    worker = create_worker(quick, handle_signals=False, poll_delay=0.02)
    task = asyncio.create_task(worker.main())
    ctx = build_context(quick)
    try:
        hook = await create_webhook(client, operator, url=receiver.url, event_types=["webhook.*"])
        seq = await last_audit_seq(context)
        await emit(ctx, "webhook.test", ping_data())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            body = (await client.get(f"/v1/webhooks/{hook['id']}", headers=operator.headers)).json()
            if not body["enabled"]:
                break
            assert loop.time() < deadline, body
            await asyncio.sleep(0.05)
        assert body["disabled_reason"] == "failing"
        (delivery,) = await deliveries(ctx)
        assert delivery.status in ("cancelled", "failed")
        disabled = await audit_events_after(context, seq, action="webhook.disable")
        assert len(disabled) == 1
        assert disabled[0].summary["reason"] == "failing"
        async with context.sessionmaker() as session:
            events = (
                await session.scalars(
                    select(OutboxEvent).where(OutboxEvent.type == "webhook_endpoint.disabled")
                )
            ).all()
        assert [e.data["id"] for e in events] == [hook["id"]]
        # Re-enabled: the streak starts again and new events are delivered.
        receiver.answer(200)
        enabled = await client.patch(
            f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=operator.headers
        )
        assert enabled.json()["enabled"] is True
        assert enabled.json()["failing_since"] is None
        before = len(receiver.received)
        await emit(ctx, "webhook.test", ping_data())
        await receiver.wait_for(before + 1)
    finally:
        await stop_worker(worker, task)
        await ctx.aclose()


async def test_unknown_ids_are_404(client: httpx.AsyncClient, operator: IssuedToken) -> None:
    for method, path in (
        ("GET", "/v1/webhooks/0190b3c4-0000-7000-8000-000000000000"),
        ("PATCH", "/v1/webhooks/0190b3c4-0000-7000-8000-000000000000"),
        ("DELETE", "/v1/webhooks/0190b3c4-0000-7000-8000-000000000000"),
        ("POST", "/v1/webhooks/0190b3c4-0000-7000-8000-000000000000/test"),
        ("POST", "/v1/webhooks/0190b3c4-0000-7000-8000-000000000000/rotate-secret"),
        ("GET", "/v1/webhooks/0190b3c4-0000-7000-8000-000000000000/deliveries"),
        ("GET", "/v1/webhook-deliveries/0190b3c4-0000-7000-8000-000000000000"),
        ("POST", "/v1/webhook-deliveries/0190b3c4-0000-7000-8000-000000000000/redeliver"),
    ):
        response = await client.request(
            method, path, json={} if method == "PATCH" else None, headers=operator.headers
        )
        assert response.status_code == 404, (method, path, response.text)


async def test_delivery_listing_pages_and_filters(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    hook = await create_webhook(client, operator, url=receiver.url)
    for _ in range(5):
        response = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=operator.headers)
        assert response.status_code == 200
    seen: list[str] = []
    cursor = ""
    while True:
        page = await client.get(
            f"/v1/webhooks/{hook['id']}/deliveries?limit=2&cursor={cursor}",
            headers=operator.headers,
        )
        assert page.status_code == 200, page.text
        seen += [d["id"] for d in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    async with context.sessionmaker() as session:
        ids = (await session.scalars(select(WebhookDelivery.id))).all()
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5
    none = await client.get(
        f"/v1/webhooks/{hook['id']}/deliveries?status=failed&event_type=webhook.test",
        headers=operator.headers,
    )
    assert none.json()["items"] == []


async def test_the_audit_trail_keeps_only_the_destination_origin(
    context: AppContext, client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    seq = await last_audit_seq(context)
    url = receiver.url + "/services/T0/B0/path-secret-value"
    hook = await create_webhook(client, operator, url=url)
    assert hook["url"] == url  # the operator reads it whole
    await client.patch(
        f"/v1/webhooks/{hook['id']}", json={"description": "x"}, headers=operator.headers
    )
    summaries = json.dumps([e.summary for e in await audit_events_after(context, seq)])
    assert "path-secret-value" not in summaries
    assert receiver.url.rsplit("/", 1)[0] + "/..." in summaries
