"""Notification channels on real parts: an aiosmtpd SMTP server (with a login) and an
HTTP receiver answering as a Slack-compatible incoming webhook (Mattermost's ``/hooks/
<token>``, which apprise's ``mmost://`` posts to: its ``slack://`` only posts to the
fixed hooks.slack.com), both on 127.0.0.1, fed by the real dispatcher and worker."""

from __future__ import annotations

import asyncio
import email
import email.message
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from app.bootstrap import build_context
from app.core.context import AppContext
from app.core.settings import Settings
from app.outbox.models import OutboxEvent
from app.webhooks import channels
from app.webhooks.guard import channel_host_allowed
from app.webhooks.models import WebhookEndpoint
from tests.factories import IssuedToken, app_with
from tests.helpers import audit_events_after, last_audit_seq
from tests.webhooks.conftest import FAST, Receiver, fast_settings, start_receiver
from tests.webhooks.test_delivery import deliveries, emit, settle

# What a channel sends; delivery's storage runs on both (test_delivery, test_dispatcher).
pytestmark = pytest.mark.one_backend("sqlite")

EVENT = "deployment.failed"
PASSWORD = "mail-Pa55word-Zq81x"
TOKEN = "hooktok3n9Hx27yv4"
TEMPLATE = (
    "{environment}: {services.0.name} {services.0.version} failed ({failure_type}), "
    "{data.links.self} at {timestamp} {nothing.here}"
)
DEPLOYMENT = "0193c6e8-7a1b-7c3e-9f10-2b4d5e6f7a8b"


def event_data() -> dict[str, Any]:
    """A ``deployment.failed`` event's data, as the deployments domain writes it."""
    return {
        "id": DEPLOYMENT,
        "kind": "deployment",
        "environment": "production",
        "status": "failure",
        "failure_type": "/problems/step-failed",
        "services": [{"name": "backend", "version": "1.4.2"}],
        "ref": "9f1c2ab",
        "links": {"self": f"/v1/deployments/{DEPLOYMENT}", "run": f"/v1/runs/{DEPLOYMENT}"},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Mailbox:
    """An SMTP server on 127.0.0.1 that requires ``alice``/:data:`PASSWORD` and keeps
    every message."""

    port: int = field(default_factory=free_port)
    messages: list[email.message.Message] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"alice",
            PASSWORD.encode(),
        )
        self.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "", ok))
        return AuthResult(success=ok)

    async def start(self) -> None:
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self.authenticate,
            auth_require_tls=False,
        )
        await asyncio.to_thread(self.controller.start)

    async def stop(self) -> None:
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop)
            self.controller = None

    @property
    def url(self) -> str:
        return (
            f"mailto://alice:{PASSWORD}@example.com:{self.port}"
            "?smtp=127.0.0.1&from=ops@example.com&to=oncall@example.com"
        )

    async def wait_for(self, count: int, within: float = 20) -> list[email.message.Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.messages) < count:
            assert loop.time() < deadline, f"received {len(self.messages)} of {count} e-mails"
            await asyncio.sleep(0.05)
        return self.messages


@dataclass
class ChatReceiver(Receiver):
    """The Receiver, also recording the path (where the hook's token travels)."""

    paths: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        return await super().handle(request)


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    box = Mailbox()
    await box.start()
    yield box
    await box.stop()


@pytest.fixture
async def chat() -> AsyncIterator[ChatReceiver]:
    found = ChatReceiver()
    runner = await start_receiver(found)
    yield found
    await runner.cleanup()


def chat_url(chat: Receiver) -> str:
    port = chat.url.split(":")[2].split("/")[0]
    return f"mmost://127.0.0.1:{port}/{TOKEN}"


@pytest.fixture
def quick(context: AppContext) -> Settings:
    """The shortened schedule, with channels allowed to contact 127.0.0.1."""
    return fast_settings(context.settings, channel_hosts=["127.0.0.1"])


@pytest.fixture
async def api(context: AppContext, quick: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = app_with(context, webhooks=quick.webhooks)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def start_worker(settings: Settings) -> tuple[AppContext, Any, asyncio.Task[Any]]:
    from workers.main import create_worker

    worker = create_worker(settings, handle_signals=False, poll_delay=0.02)
    task = asyncio.create_task(worker.main())
    return build_context(settings), worker, task


@pytest.fixture
async def channel_worker(quick: Settings) -> AsyncIterator[AppContext]:
    from workers.main import stop_worker

    ctx, worker, task = await start_worker(quick)
    yield ctx
    await stop_worker(worker, task)
    await ctx.aclose()


async def create_channel(api: httpx.AsyncClient, token: IssuedToken, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/webhooks", json=body, headers=token.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_an_event_reaches_mail_and_chat_once_each(
    context: AppContext,
    api: httpx.AsyncClient,
    operator: IssuedToken,
    mailbox: Mailbox,
    chat: ChatReceiver,
    channel_worker: AppContext,
) -> None:
    mail = await create_channel(
        api, operator, channel=mailbox.url, event_types=[EVENT], templates={EVENT: TEMPLATE}
    )
    room = await create_channel(api, operator, channel=chat_url(chat), event_types=[EVENT])
    assert mail["kind"] == room["kind"] == "channel"
    assert mail["channel_service"] == "mailto"
    assert room["channel_service"] == "mmost"
    assert mail["secret"] is None
    event_id = await emit(channel_worker, EVENT, event_data())
    await emit(channel_worker, "webhook_endpoint.disabled", {"id": "not for these"})
    (sent,) = await mailbox.wait_for(1)
    (posted,) = await chat.wait_for(1)
    await settle(channel_worker, "succeeded", 2)
    await asyncio.sleep(0.5)
    assert len(mailbox.messages) == 1
    assert len(chat.received) == 1
    assert mailbox.logins == [("alice", True)]
    assert sent["Subject"] == f"[Formula Ops] {EVENT}"
    assert sent["To"].endswith("oncall@example.com")
    text = sent.get_payload(decode=True).decode()  # type: ignore[union-attr]
    async with context.sessionmaker() as session:
        event = await session.get(OutboxEvent, event_id)
    assert event is not None
    stamp = event.created_at.isoformat().replace("+00:00", "Z")
    # The template, rendered: dotted keys, top-level keys, and a missing key as written.
    assert (
        "production: backend 1.4.2 failed (/problems/step-failed), "
        f"/v1/deployments/{DEPLOYMENT} at {stamp} {{nothing.here}}"
    ) in text
    assert chat.paths == [f"/hooks/{TOKEN}"]
    payload = posted.json
    # No template: the default message (the type, the time and the event's values).
    assert f"{EVENT} at {stamp}" in payload["text"]
    assert "environment: production" in payload["text"]
    assert "failure_type: /problems/step-failed" in payload["text"]
    assert f"link: /v1/deployments/{DEPLOYMENT}" in payload["text"]
    rows = await deliveries(channel_worker)
    assert {(d.endpoint_id, d.status, d.attempts) for d in rows} == {
        (mail["id"], "succeeded", 1),
        (room["id"], "succeeded", 1),
    }


async def test_a_channel_that_is_down_is_retried_and_logged(
    context: AppContext,
    api: httpx.AsyncClient,
    operator: IssuedToken,
    chat: ChatReceiver,
) -> None:
    from workers.main import stop_worker

    box = Mailbox()  # not started yet: connections are refused
    settings = fast_settings(
        context.settings, channel_hosts=["127.0.0.1"], retry_schedule_seconds=[0, 1, 1, 1, 1]
    )
    ctx, worker, task = await start_worker(settings)
    try:
        chat.answer(500, 200)
        mail = await create_channel(api, operator, channel=box.url, event_types=[EVENT])
        room = await create_channel(api, operator, channel=chat_url(chat), event_types=[EVENT])
        await emit(ctx, EVENT, event_data())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not any(d.endpoint_id == mail["id"] and d.attempts for d in await deliveries(ctx)):
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        await box.start()
        await box.wait_for(1)
        await chat.wait_for(2)
        await settle(ctx, "succeeded", 2)
        for hook in (mail, room):
            listing = await api.get(
                f"/v1/webhooks/{hook['id']}/deliveries", headers=operator.headers
            )
            (delivery,) = listing.json()["items"]
            detail = (
                await api.get(f"/v1/webhook-deliveries/{delivery['id']}", headers=operator.headers)
            ).json()
            log = detail["attempt_log"]
            assert [a["succeeded"] for a in log] == [False, True], log
            assert all(a["status_code"] is None for a in log)
            assert log[0]["error"]
            assert log[1]["error"] is None
            assert detail["status"] == "succeeded"
            for text in (json.dumps(detail), listing.text):
                assert PASSWORD not in text
                assert TOKEN not in text
            body = (await api.get(f"/v1/webhooks/{hook['id']}", headers=operator.headers)).json()
            assert body["failing_since"] is None
            assert body["last_success_at"]
        assert len(box.messages) == 1
    finally:
        await stop_worker(worker, task)
        await ctx.aclose()
        await box.stop()


async def test_the_channel_url_is_shown_to_no_one(
    context: AppContext,
    api: httpx.AsyncClient,
    operator: IssuedToken,
    mailbox: Mailbox,
    chat: ChatReceiver,
    channel_worker: AppContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seq = await last_audit_seq(context)
    chat.answer(500, 200)  # a failed attempt too: its error is shown
    created = [
        await create_channel(api, operator, channel=mailbox.url, event_types=[EVENT]),
        await create_channel(api, operator, channel=chat_url(chat), event_types=[EVENT]),
    ]
    await emit(channel_worker, EVENT, event_data())
    await settle(channel_worker, "succeeded", 2)
    patched = await api.patch(
        f"/v1/webhooks/{created[1]['id']}",
        json={"channel": chat_url(chat), "templates": {"*": "{type}"}},
        headers=operator.headers,
    )
    assert patched.status_code == 200, patched.text
    texts = [json.dumps(created), patched.text]
    for hook in created:
        texts.append((await api.get(f"/v1/webhooks/{hook['id']}", headers=operator.headers)).text)
        listing = await api.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=operator.headers)
        texts.append(listing.text)
        for item in listing.json()["items"]:
            texts.append(
                (
                    await api.get(f"/v1/webhook-deliveries/{item['id']}", headers=operator.headers)
                ).text
            )
    texts.append((await api.get("/v1/webhooks", headers=operator.headers)).text)
    audit = await audit_events_after(context, seq)
    assert {e.action for e in audit} >= {"webhook.create", "webhook.update"}
    texts.append(json.dumps([e.summary for e in audit], default=str))
    texts.append(caplog.text)
    texts.append(json.dumps([r.getMessage() for r in caplog.records]))
    async with context.sessionmaker() as session:
        rows = [await session.get(WebhookEndpoint, hook["id"]) for hook in created]
    texts.append(json.dumps([[r.url, r.channel_sealed] for r in rows if r is not None]))
    assert any("HTTP" in t or "500" in t for t in texts)  # the failure is in the log
    for text in texts:
        for part in (PASSWORD, TOKEN, "alice:"):
            assert part not in text
    assert created[0]["url"] == f"mailto://example.com:{mailbox.port}/***"
    assert created[1]["url"].endswith("/***")


async def test_schemes_hosts_and_bodies_are_checked(
    api: httpx.AsyncClient, operator: IssuedToken, chat: ChatReceiver
) -> None:
    port = chat.url.split(":")[2].split("/")[0]
    cases = [
        ({"channel": "http://127.0.0.1/x"}, "value_error"),  # not a channel scheme
        ({"channel": "file:///etc/passwd"}, "value_error"),
        ({"channel": "syslog://127.0.0.1"}, "value_error"),
        ({"channel": f"mmost://127.0.0.2:{port}/tok"}, "unsafe_host"),  # not listed
        ({"channel": "json://evil.example.com/"}, "unsafe_host"),
        ({"channel": "mailto://u:pw@example.com?smtp=10.0.0.1"}, "unsafe_host"),
        ({"channel": "json://x", "url": chat.url}, None),
        ({"url": chat.url, "templates": {"*": "x"}}, None),
        ({"channel": chat_url(chat), "headers": {"X-A": "b"}}, None),
        ({"channel": chat_url(chat), "templates": {"*": "{data.__class__}"}}, None),
        ({"channel": chat_url(chat), "templates": {"*": "{type!r}"}}, None),
        ({"channel": chat_url(chat), "templates": {"*": "{type:>99999}"}}, None),
        ({"channel": chat_url(chat), "templates": {"*": "{data[0]}"}}, None),
        ({"channel": chat_url(chat), "templates": {"*": "{0}"}}, None),
        ({"channel": chat_url(chat), "templates": {"*": "{unclosed"}}, None),
        ({"channel": chat_url(chat), "templates": {"no_such.type": "x"}}, None),
        ({}, None),
    ]
    for body, kind in cases:
        response = await api.post("/v1/webhooks", json=body, headers=operator.headers)
        assert response.status_code == 422, (body, response.text)
        if kind is not None:
            assert response.json()["errors"][0]["type"] == kind, (body, response.text)
        assert TOKEN not in response.text
        assert "pw@" not in response.text
    assert (await api.get("/v1/webhooks", headers=operator.headers)).json()["items"] == []


async def test_a_host_allowed_by_name_must_still_resolve_to_an_allowed_address(
    context: AppContext, operator: IssuedToken
) -> None:
    app = app_with(context, webhooks=FAST.model_copy(update={"channel_hosts": ["10.0.0.7"]}))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.post(
            "/v1/webhooks", json={"channel": "json://10.0.0.7/hook"}, headers=operator.headers
        )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["type"] == "unsafe_private"


def test_hosts_apprise_contacts() -> None:
    """Read from the plugin: a Slack webhook goes to hooks.slack.com whatever its
    tokens, a bot to slack.com, an e-mail to its SMTP server (derived for known
    providers), and redirects are off even when the URL asks for them."""
    settings = FAST
    cases = {
        "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7": [("hooks.slack.com", 443)],
        "slack://xoxb-1234-1234-abc124/#general": [("slack.com", 443)],
        "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js": [("discord.com", 443)],
        "mailto://bob:pw@gmail.com": [("smtp.gmail.com", 587)],
        "mailto://bob:pw@example.com:2525?smtp=mail.example.net": [("mail.example.net", 2525)],
        "mmost://chat.example.com/abcdef": [("chat.example.com", 80)],
        "ntfy://topic": [("ntfy.sh", 443)],
    }
    own = {"hooks.slack.com", "slack.com", "discord.com", "ntfy.sh"}
    for url, hosts in cases.items():
        service, plugin = channels.instantiate(url, settings)
        assert service.hosts(plugin) == hosts, url
        # The service's own hosts need no listing; any other host does.
        allowed = channel_host_allowed(hosts[0][0], service.fixed_hosts, [])
        assert allowed is (hosts[0][0] in own), url
    teams = "workflows://prod-161.westeurope.logic.azure.com:443/643e69f83c8944438d68/KODueb"
    service, plugin = channels.instantiate(teams, settings)
    ((host, _),) = service.hosts(plugin)
    assert channel_host_allowed(host, service.fixed_hosts, [])
    assert channels.masked(teams) == "workflows://prod-161.westeurope.logic.azure.com:443/***"
    _, plugin = channels.instantiate("json://127.0.0.1:9/x?redirect=yes&retry=5", settings)
    assert plugin.redirects is False
    assert plugin.retry == 0
    assert channels.masked("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkd") == "slack://***"
    assert (
        channels.masked("mmost://chat.example.com:8065/tok") == "mmost://chat.example.com:8065/***"
    )


def test_templates_render_keys_only() -> None:
    body = {
        "type": "deployment.failed",
        "timestamp": "2026-12-02T12:00:00Z",
        "data": {"environment": "prod", "services": [{"name": "api"}], "n": 3, "none": None},
    }
    render = channels.render
    assert render("{type} {environment} {data.environment}", body) == (
        "deployment.failed prod prod"
    )
    assert render("{services.0.name} {n} {none}|{{x}}", body) == "api 3 |{x}"
    assert render("{missing} {data.environment.deeper}", body) == (
        "{missing} {data.environment.deeper}"
    )
    # Refused forms stay as written, nothing is evaluated.
    assert render("{type.__class__} {type!r} {n:>5} {data[n]}", body) == (
        "{type.__class__} {type!r} {n:>5} {data[n]}"
    )
    assert render("{services}", body) == '[{"name":"api"}]'
    assert channels.template_errors("{type.__class__.__mro__}")
    assert render("{type.__class__.__mro__}", body) == "{type.__class__.__mro__}"
    assert channels.template_errors("{a!s}")
    assert channels.template_errors("{a:x}")
    templates = {"*": "any", "deployment.*": "family", "deployment.failed": "exact"}
    assert channels.template_for(templates, "deployment.failed") == "exact"
    assert channels.template_for(templates, "deployment.started") == "family"
    assert channels.template_for(templates, "run.failed") == "any"
    assert channels.template_for({}, "run.failed") is None


async def test_test_event_and_changes_of_a_channel(
    api: httpx.AsyncClient, operator: IssuedToken, chat: ChatReceiver
) -> None:
    room = await create_channel(
        api, operator, channel=chat_url(chat), event_types=[EVENT], templates={"*": "one {type}"}
    )
    path = f"/v1/webhooks/{room['id']}"
    tested = await api.post(f"{path}/test", headers=operator.headers)
    assert tested.status_code == 200, tested.text
    assert tested.json()["attempt"]["succeeded"] is True
    assert tested.json()["attempt"]["status_code"] is None
    assert chat.received[0].json["text"].endswith("one webhook.test")
    changed = await api.patch(
        path, json={"templates": {"webhook.test": "two {endpoint_id}"}}, headers=operator.headers
    )
    assert changed.status_code == 200, changed.text
    await api.post(f"{path}/test", headers=operator.headers)
    assert chat.received[1].json["text"].endswith(f"two {room['id']}")
    for body in ({"url": chat.url}, {"headers": {"X-A": "b"}}, {"format": "statuspage"}):
        response = await api.patch(path, json=body, headers=operator.headers)
        assert response.status_code == 422, (body, response.text)
    rotated = await api.post(f"{path}/rotate-secret", headers=operator.headers)
    assert rotated.status_code == 409, rotated.text
    assert rotated.json()["type"] == "/problems/not-a-webhook"
    moved = await api.patch(
        path, json={"channel": "mmost://127.0.0.2:9/x"}, headers=operator.headers
    )
    assert moved.status_code == 422, moved.text
    assert moved.json()["errors"][0]["type"] == "unsafe_host"
    hook = await api.post("/v1/webhooks", json={"url": chat.url}, headers=operator.headers)
    for body in ({"channel": chat_url(chat)}, {"templates": {"*": "x"}}):
        response = await api.patch(
            f"/v1/webhooks/{hook.json()['id']}", json=body, headers=operator.headers
        )
        assert response.status_code == 422, (body, response.text)
    assert len(chat.received) == 2


def test_errors_are_scrubbed_of_every_part_of_the_url() -> None:
    url = f"mailto://alice:{PASSWORD}@example.com:2525?smtp=mail.example.net&to=oncall@x.org"
    scrub = channels.Scrub.of(url)
    text = scrub(f"login alice:{PASSWORD} refused from mail.example.net for oncall@x.org")
    assert PASSWORD not in text
    assert "oncall@x.org" not in text
    assert text.startswith("login [redacted]")
    assert "refused from" in text  # ordinary words stay
    slack = channels.Scrub.of("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7")
    assert slack("posted to T1JJ3T3L2/A1BRTD4JD") == "posted to [redacted]/[redacted]"


async def test_a_channel_url_may_not_set_routing_headers(
    api: httpx.AsyncClient, operator: IssuedToken, chat: ChatReceiver
) -> None:
    port = chat.url.split(":")[2].split("/")[0]
    for header in ("+Host=admin.internal.example", "+X-Forwarded-For=10.0.0.1", "+webhook-id=x"):
        response = await api.post(
            "/v1/webhooks",
            json={"channel": f"json://127.0.0.1:{port}/hook?{header}"},
            headers=operator.headers,
        )
        assert response.status_code == 422, (header, response.text)
    allowed = await api.post(
        "/v1/webhooks",
        json={"channel": f"json://127.0.0.1:{port}/hook?+X-Team=ops"},
        headers=operator.headers,
    )
    assert allowed.status_code == 201, allowed.text
