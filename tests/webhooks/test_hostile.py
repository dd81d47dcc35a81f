"""A hostile receiver or operator: nothing they send or set keeps a batch from being
recorded, reads back a sealed header value, or moves it to another host."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select

from app.core.context import AppContext
from app.webhooks.models import WebhookDelivery
from tests.factories import IssuedToken
from tests.webhooks.conftest import Receiver, create_webhook, start_receiver
from tests.webhooks.test_delivery import emit, ping_data

# A hostile receiver's effect; delivery's storage runs on both (test_delivery).
pytestmark = pytest.mark.one_backend("sqlite")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)


def _answer(*chunks: bytes, pause: float = 0) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
        writer.close()

    return handle


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """A raw HTTP server on 127.0.0.1 answering bytes as given; its URL."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"

    yield start
    for server in servers:
        server.close()


# "²" is a digit to str.isdigit() and not to float().
SUPERSCRIPT = b"HTTP/1.1 503 Busy\r\nRetry-After: \xc2\xb2\r\nContent-Length: 0\r\n\r\n"


async def test_an_odd_retry_after_is_recorded_not_a_500(
    client: httpx.AsyncClient, operator: IssuedToken, raw: Callable[[Handler], Awaitable[str]]
) -> None:
    url = await raw(_answer(SUPERSCRIPT))
    hook = await create_webhook(client, operator, url=url)
    tested = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=operator.headers)
    assert tested.status_code == 200, tested.text
    assert tested.json()["attempt"]["status_code"] == 503


async def test_one_hostile_receiver_does_not_hold_back_its_batch(
    client: httpx.AsyncClient,
    operator: IssuedToken,
    receiver: Receiver,
    raw: Callable[[Handler], Awaitable[str]],
    fast_worker: AppContext,
) -> None:
    await create_webhook(client, operator, url=receiver.url, event_types=["webhook.*"])
    await create_webhook(client, operator, url=await raw(_answer(SUPERSCRIPT)))
    await emit(fast_worker, "webhook.test", ping_data())
    await receiver.wait_for(1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        async with fast_worker.sessionmaker() as session:
            rows = (await session.scalars(select(WebhookDelivery))).all()
        if all(d.attempts >= 1 for d in rows):
            break
        assert loop.time() < deadline, [(d.status, d.attempts) for d in rows]
        await asyncio.sleep(0.05)
    await asyncio.sleep(6)  # past the lease (5 s): nothing is sent again to the healthy one
    assert len(receiver.received) == 1


async def test_header_values_with_a_line_break_are_refused(
    client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    for headers in ({"X-A": "v\n"}, {"X-A\n": "v"}, {"X-Forwarded-For": "10.0.0.1"}):
        response = await client.post(
            "/v1/webhooks", json={"url": receiver.url, "headers": headers}, headers=operator.headers
        )
        assert response.status_code == 422, (headers, response.text)


class EchoReceiver(Receiver):
    """Answers with the request's headers (as many debugging receivers do)."""

    async def handle(self, request: web.Request) -> web.Response:
        await super().handle(request)
        return web.json_response(dict(request.headers))


@pytest.fixture
async def echo() -> AsyncIterator[EchoReceiver]:
    found = EchoReceiver()
    runner = await start_receiver(found)
    yield found
    await runner.cleanup()


async def test_an_echoing_receiver_does_not_show_the_header_values(
    client: httpx.AsyncClient, operator: IssuedToken, echo: EchoReceiver
) -> None:
    values = {"X-Functions-Key": "azure-fn-key-0123456789", "Ocp-Apim-Key": "apim-sub-9876543210"}
    hook = await create_webhook(client, operator, url=echo.url, headers=values)
    tested = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=operator.headers)
    delivery = tested.json()["delivery"]["id"]
    detail = await client.get(f"/v1/webhook-deliveries/{delivery}", headers=operator.headers)
    assert echo.received[0].headers["X-Functions-Key"] == values["X-Functions-Key"]  # sent
    for value in values.values():
        assert value not in tested.text
        assert value not in detail.text
    assert "[redacted]" in tested.json()["attempt"]["response_excerpt"]


async def test_moving_the_destination_asks_for_the_headers_again(
    client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver, echo: EchoReceiver
) -> None:
    hook = await create_webhook(
        client, operator, url=receiver.url, headers={"Authorization": "Bearer credential-1"}
    )
    path = f"/v1/webhooks/{hook['id']}"
    moved = await client.patch(path, json={"url": echo.url}, headers=operator.headers)
    assert moved.status_code == 422, moved.text
    assert moved.json()["errors"][0]["loc"] == ["body", "headers"]
    same_host = receiver.url + "/elsewhere"
    kept = await client.patch(path, json={"url": same_host}, headers=operator.headers)
    assert kept.status_code == 200, kept.text
    cleared = await client.patch(
        path, json={"url": echo.url, "headers": {}}, headers=operator.headers
    )
    assert cleared.status_code == 200, cleared.text
    await client.post(f"{path}/test", headers=operator.headers)
    assert "Authorization" not in echo.received[0].headers


async def test_a_test_answered_410_leaves_the_endpoint_enabled(
    client: httpx.AsyncClient, operator: IssuedToken, receiver: Receiver
) -> None:
    hook = await create_webhook(client, operator, url=receiver.url)
    receiver.answer(410)
    tested = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=operator.headers)
    assert tested.json()["attempt"]["status_code"] == 410
    read = (await client.get(f"/v1/webhooks/{hook['id']}", headers=operator.headers)).json()
    assert read["enabled"] is True
    assert read["failing_since"] is None


async def test_the_excerpt_is_the_first_kib_however_it_trickles(
    client: httpx.AsyncClient, operator: IssuedToken, raw: Callable[[Handler], Awaitable[str]]
) -> None:
    head = b"HTTP/1.1 500 Oops\r\nContent-Length: 2000\r\n\r\n"
    url = await raw(_answer(head, *[b"x" * 100] * 20, pause=0.01))
    hook = await create_webhook(client, operator, url=url)
    tested = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=operator.headers)
    assert tested.json()["attempt"]["response_excerpt"] == "x" * 1024
