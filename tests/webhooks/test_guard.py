"""The SSRF guard: which destinations are refused and why, and that aiohttp, resolving
through the guard, never connects to an address the guard did not pass at that moment.

Names are resolved by a stub (a table of answers) or, for ``localhost``, by the system's
hosts file; the only traffic is to counting servers on 127.0.0.1 / 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from app.core.settings import WebhookSettings
from app.webhooks.guard import (
    AddressGuard,
    DestinationRefused,
    UnsafeDestination,
    channel_host_allowed,
    refusal_of,
)
from app.webhooks.resolver import GuardedResolver

PUBLIC = "93.184.216.34"


@dataclass
class StubDNS(AbstractResolver):
    """Answers from a table, never the network: ``answers[name]`` is a list of answers, one
    per lookup in turn (the last repeats). Usable as the guard's resolver (called) and as
    aiohttp's (``resolve``); both count in ``lookups``."""

    answers: dict[str, list[list[str]]]
    lookups: dict[str, int] = field(default_factory=dict)

    def _next(self, host: str) -> list[str]:
        host = host.rstrip(".")
        turns = self.answers.get(host)
        if turns is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        n = self.lookups.get(host, 0)
        self.lookups[host] = n + 1
        return turns[min(n, len(turns) - 1)]

    async def __call__(self, host: str, port: int) -> list[str]:
        return self._next(host)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = []
        for text in self._next(host):
            version = ipaddress.ip_address(text).version
            results.append(
                ResolveResult(
                    hostname=host,
                    host=text,
                    port=port,
                    family=socket.AF_INET if version == 4 else socket.AF_INET6,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
            )
        return results

    async def close(self) -> None:
        pass


TABLE_DNS: dict[str, list[list[str]]] = {
    "example.com": [[PUBLIC]],
    "v6.example.com": [["2606:4700:4700::1111", PUBLIC]],
    "mixed.test": [[PUBLIC, "10.0.0.1"]],
    "mixed6.test": [["2606:4700:4700::1111", "fd00::1"]],
    "metadata.test": [["169.254.169.254"]],
    "mapped.test": [["::ffff:127.0.0.1"]],
    "empty.test": [[]],
    "garbage.test": [[PUBLIC, "not-an-address"]],
}


async def decision(guard: AddressGuard, url: str) -> str | None:
    """What a delivery meets: the syntax check, then the lookup of a name."""
    try:
        destination = guard.check_url(url)
        if destination.address is None:
            await guard.resolve(destination.host, destination.port)
    except UnsafeDestination as refusal:
        return refusal.reason
    return None


CASES: list[tuple[str, str | None]] = [
    # loopback in every spelling a resolver accepts
    ("https://127.0.0.1/", "loopback"),
    ("https://127.1/", "loopback"),
    ("https://2130706433/", "loopback"),
    ("https://0x7f000001/", "loopback"),
    ("https://0177.0.0.1/", "loopback"),
    ("https://0x7f.1/", "loopback"),
    ("https://017700000001/", "loopback"),
    ("https://127.0.0.1./", "loopback"),
    ("https://\uff11\uff12\uff17.0.0.1/", "loopback"),  # fullwidth digits, NFKC-normalised
    ("https://[::1]/", "loopback"),
    ("https://[::ffff:127.0.0.1]/", "loopback"),
    ("https://[::ffff:7f00:1]/", "loopback"),
    ("https://[::127.0.0.1]/", "loopback"),  # deprecated IPv4-compatible
    ("https://[64:ff9b::7f00:1]/", "loopback"),  # NAT64
    ("https://[2002:7f00:1::]/", "loopback"),  # 6to4
    ("https://localhost/", "loopback"),
    ("https://LocalHost./", "loopback"),
    ("https://api.localhost/", "loopback"),
    ("https://mapped.test/", "loopback"),
    # unspecified
    ("https://0.0.0.0/", "unspecified"),
    ("https://0/", "unspecified"),
    ("https://[::]/", "unspecified"),
    # private, link-local, shared
    ("https://10.0.0.1/", "private"),
    ("https://172.16.5.4/", "private"),
    ("https://192.168.1.1/", "private"),
    ("https://[::ffff:10.0.0.1]/", "private"),
    ("https://[2002:a00:1::]/", "private"),
    ("https://[fd00::1]/", "private"),
    ("https://[fd00:ec2::254]/", "private"),  # the IPv6 metadata address of one cloud
    ("https://169.254.169.254/latest/meta-data/", "link_local"),
    ("https://[fe80::1%25eth0]/", "link_local"),
    ("https://metadata.test/", "link_local"),
    ("https://100.64.0.1/", "cgnat"),
    # multicast, broadcast, reserved, documentation, benchmarking
    ("https://224.0.0.1/", "multicast"),
    ("https://[ff02::1]/", "multicast"),
    ("https://240.0.0.1/", "reserved"),
    ("https://255.255.255.255/", "broadcast"),
    ("https://192.0.0.1/", "reserved"),
    ("https://[100::1]/", "reserved"),
    ("https://[2001::1]/", "reserved"),  # Teredo
    ("https://[::8.8.8.8]/", "mapped"),  # IPv4-compatible, even of a public address
    ("https://192.0.2.1/", "documentation"),
    ("https://198.51.100.1/", "documentation"),
    ("https://203.0.113.1/", "documentation"),
    ("https://[2001:db8::1]/", "documentation"),
    ("https://198.18.0.1/", "benchmarking"),
    # syntax
    ("ftp://8.8.8.8/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://8.8.8.8:70/_", "scheme"),
    ("http://8.8.8.8/", "scheme"),  # allow_http is False
    ("example.com/hook", "scheme"),
    ("https://user:pass@8.8.8.8/", "userinfo"),
    ("https://token@example.com/", "userinfo"),
    ("https://:pass@example.com/", "userinfo"),
    ("https:///hook", "host"),
    ("https://", "host"),
    ("https://1.2.3.4.5/", "host"),
    ("https://hooks.0x10/", "host"),  # ends in a number: an address or nothing
    ("https://ex%41mple.com/", "host"),
    ("https://exa mple.com/", "host"),
    ("https://[::1x]/", "host"),
    ("https://example.com\\@127.0.0.1/", "url"),
    ("https://8.8.8.8:0/", "port"),
    ("https://8.8.8.8:65536/", "url"),
    # names: any refused address refuses the name
    ("https://mixed.test/", "private"),
    ("https://mixed6.test/", "private"),
    ("https://nowhere.test/", "unresolvable"),
    ("https://empty.test/", "unresolvable"),
    ("https://garbage.test/", "unresolvable"),
    # allowed: public unicast
    ("https://8.8.8.8/", None),
    ("https://1.1.1.1/", None),
    ("https://1.1.1.1:8443/hook?x=1", None),
    ("https://[2606:4700:4700::1111]/", None),
    ("https://[::ffff:8.8.8.8]/", None),
    ("https://[64:ff9b::808:808]/", None),
    ("https://[2002:808:808::]/", None),
    ("https://example.com/hook", None),
    ("HTTPS://Example.COM./hook", None),
    ("https://v6.example.com/", None),
    ("https://134744072/", None),  # 8.8.8.8 in decimal
]


@pytest.mark.parametrize(("url", "expected"), CASES)
async def test_decision(url: str, expected: str | None) -> None:
    guard = AddressGuard(resolver=StubDNS(TABLE_DNS))
    assert await decision(guard, url) == expected


async def test_http_only_when_allowed() -> None:
    assert await decision(AddressGuard(allow_http=True), "http://8.8.8.8/") is None
    assert await decision(AddressGuard(allow_http=True), "http://127.0.0.1/") == "loopback"
    assert await decision(AddressGuard(allow_http=True), "ftp://8.8.8.8/") == "scheme"


def test_a_legacy_ipv4_form_is_requested_as_the_address_it_was_judged_as() -> None:
    destination = AddressGuard().check_url("https://134744072:8443/hook?x=1")
    assert destination.url == "https://8.8.8.8:8443/hook?x=1"
    assert (destination.host, destination.port) == ("8.8.8.8", 8443)
    assert destination.address == ipaddress.ip_address("8.8.8.8")


def test_the_host_is_lowercased_and_idna_encoded() -> None:
    destination = AddressGuard().check_url("https://Bücher.Example/hook")
    assert destination.host == "xn--bcher-kva.example"
    assert destination.url == "https://xn--bcher-kva.example/hook"
    assert destination.address is None
    assert destination.port == 443


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:s3cret-pass@10.0.0.1/hook?token=s3cret-query",
        "https://s3cret-pass@example.com/hook?token=s3cret-query",
        "https://10.0.0.1/s3cret-path?token=s3cret-query",
        "ftp://alice:s3cret-pass@example.com/?token=s3cret-query",
        "https://example.com:0/?token=s3cret-query",
        "https://alice:s3cret-pass@[::1x]/?token=s3cret-query",
        "https://mixed.test/?token=s3cret-query",
    ],
)
async def test_a_refusal_never_repeats_secrets(url: str) -> None:
    guard = AddressGuard(resolver=StubDNS(TABLE_DNS))
    with pytest.raises(UnsafeDestination) as caught:
        destination = guard.check_url(url)
        await guard.resolve(destination.host, destination.port)
    text = str(caught.value)
    assert "s3cret" not in text
    assert "alice" not in text
    assert "10.0.0.1" not in text or "mixed" not in url  # a name's addresses stay private


async def test_a_resolved_refusal_keeps_the_address_for_the_server_only() -> None:
    guard = AddressGuard(resolver=StubDNS(TABLE_DNS))
    with pytest.raises(UnsafeDestination) as caught:
        await guard.resolve("mixed.test", 443)
    assert caught.value.address == ipaddress.ip_address("10.0.0.1")
    assert "10.0.0.1" not in str(caught.value)


async def test_allowed_networks() -> None:
    guard = AddressGuard(allowed=(ipaddress.ip_network("127.0.0.1/32"),))
    assert guard.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert guard.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None  # same host
    assert guard.refusal(ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert guard.refusal(ipaddress.ip_address("::1")) == "loopback"
    # A translator's side is not ours: NAT64 of an allowed address stays refused.
    assert guard.refusal(ipaddress.ip_address("64:ff9b::7f00:1")) == "loopback"
    assert await decision(guard, "https://127.0.0.1/") is None
    assert await decision(guard, "https://127.1/") is None
    assert await decision(guard, "https://127.0.0.2/") == "loopback"


async def test_from_settings() -> None:
    settings = WebhookSettings.model_validate(
        {"allowed_networks": "10.0.5.0/24, fd12::/16", "allow_http": True}
    )
    guard = AddressGuard.from_settings(settings, resolver=StubDNS({"on-prem.test": [["10.0.5.7"]]}))
    assert guard.allow_http is True
    assert guard.allowed == (ipaddress.ip_network("10.0.5.0/24"), ipaddress.ip_network("fd12::/16"))
    assert await decision(guard, "http://on-prem.test:8080/hook") is None
    assert await decision(guard, "http://10.0.5.200/") is None
    assert await decision(guard, "http://[fd12::1]/") is None
    assert await decision(guard, "http://10.0.6.1/") == "private"
    assert await decision(guard, "http://[fd13::1]/") == "private"
    assert AddressGuard.from_settings(WebhookSettings()) == AddressGuard()


async def test_the_system_resolver_is_the_default() -> None:
    """``localhost`` through getaddrinfo (the hosts file): its loopback answer is refused,
    and allowed once loopback is."""
    with pytest.raises(UnsafeDestination) as caught:
        await AddressGuard().resolve("localhost", 443)
    assert caught.value.reason == "loopback"
    allowed = AddressGuard(
        allowed=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    )
    assert ipaddress.ip_address("127.0.0.1") in await allowed.resolve("localhost", 443)


# --- aiohttp connects only to what the guard passed --------------------------------------


@dataclass
class CountingServer:
    host: str
    port: int = 0
    connections: int = 0


@asynccontextmanager
async def counting_server(host: str, port: int = 0) -> AsyncIterator[CountingServer]:
    """A TCP server on ``host`` that counts connections and answers 204."""
    state = CountingServer(host)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def twin_servers() -> AsyncIterator[tuple[CountingServer, CountingServer]]:
    """Counting servers on 127.0.0.1 and 127.0.0.2, on one port number: a URL's port
    then reaches either, and only the address decides which."""
    for _ in range(20):
        async with AsyncExitStack() as stack:
            one = await stack.enter_async_context(counting_server("127.0.0.1"))
            try:
                two = await stack.enter_async_context(counting_server("127.0.0.2", one.port))
            except OSError:
                continue  # that port is taken on 127.0.0.2: another one
            yield one, two
            return
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


async def fetch(resolver: AbstractResolver, url: str) -> int:
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.post(url, data=b"{}", allow_redirects=False) as response,
    ):
        return response.status


def refused(caught: BaseException, reason: str) -> bool:
    refusal = refusal_of(caught)
    return refusal is not None and refusal.reason == reason


@pytest.mark.parametrize("inner", ["stub", "guard"], ids=["wrapped-resolver", "guard-resolver"])
async def test_dns_rebinding_is_refused_at_connect_time(inner: str) -> None:
    """Public at creation, loopback at delivery: the delivery is refused before any
    connection, whether GuardedResolver wraps a resolver or uses the guard's own."""
    async with counting_server("127.0.0.1") as server:
        stub = StubDNS({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
        guard = AddressGuard(allow_http=True, resolver=stub)
        url = f"http://rebind.test:{server.port}/hook"
        destination = guard.check_url(url)
        assert await guard.resolve(destination.host, destination.port) == [
            ipaddress.ip_address(PUBLIC)
        ]
        resolver = GuardedResolver(guard, stub if inner == "stub" else None)
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await fetch(resolver, destination.url)
        assert isinstance(caught.value.os_error, DestinationRefused)
        assert refused(caught.value, "loopback")
        assert "127.0.0.1" not in str(caught.value)
        assert stub.lookups["rebind.test"] == 2
        assert server.connections == 0


@pytest.mark.parametrize("inner", ["stub", "guard"], ids=["wrapped-resolver", "guard-resolver"])
async def test_the_connect_path_uses_the_checked_address(inner: str) -> None:
    """Allowed 127.0.0.1 only, servers on 127.0.0.1 and 127.0.0.2 on one port: a name on
    127.0.0.2 is refused (its server sees nothing), a name on 127.0.0.1 connects, and a
    name answering 127.0.0.1 and then 127.0.0.2 is looked up once and connects to the
    answer judged."""
    async with twin_servers() as (one, two):
        stub = StubDNS(
            {
                "two.test": [["127.0.0.2"]],
                "one.test": [["127.0.0.1"]],
                "flip.test": [["127.0.0.1"], ["127.0.0.2"]],
            }
        )
        guard = AddressGuard(
            allowed=(ipaddress.ip_network("127.0.0.1/32"),), allow_http=True, resolver=stub
        )

        def resolver() -> GuardedResolver:
            return GuardedResolver(guard, stub if inner == "stub" else None)

        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await fetch(resolver(), f"http://two.test:{two.port}/")
        assert refused(caught.value, "loopback")
        assert two.connections == 0
        assert await fetch(resolver(), f"http://one.test:{one.port}/") == 204
        assert (one.connections, two.connections) == (1, 0)
        assert await fetch(resolver(), f"http://flip.test:{one.port}/") == 204
        assert (one.connections, two.connections) == (2, 0)
        assert stub.lookups["flip.test"] == 1


async def test_guarded_resolver_answers_the_family_asked() -> None:
    stub = StubDNS(
        {"both.test": [[PUBLIC, "2606:4700:4700::1111"]], "half.test": [[PUBLIC, "fd00::1"]]}
    )
    resolver = GuardedResolver(AddressGuard(resolver=stub))
    v4 = await resolver.resolve("both.test", 443, socket.AF_INET)
    assert [(r["host"], r["family"]) for r in v4] == [(PUBLIC, socket.AF_INET)]
    v6 = await resolver.resolve("both.test", 443, socket.AF_INET6)
    assert [r["host"] for r in v6] == ["2606:4700:4700::1111"]
    both = await resolver.resolve("both.test", 443, socket.AF_UNSPEC)
    assert [r["host"] for r in both] == [PUBLIC, "2606:4700:4700::1111"]
    assert all(r["port"] == 443 and r["hostname"] == "both.test" for r in both)
    # Asking for IPv4 only does not hide the name's private IPv6 address.
    for guarded in (resolver, GuardedResolver(AddressGuard(), stub)):
        with pytest.raises(DestinationRefused) as caught:
            await guarded.resolve("half.test", 443, socket.AF_INET)
        assert caught.value.refusal.reason == "private"


async def test_one_refused_address_refuses_the_name_in_aiohttp() -> None:
    guard = AddressGuard(allow_http=True)
    async with counting_server("127.0.0.1") as server:
        stub = StubDNS({"mixed.test": [[PUBLIC, "127.0.0.1"]]})
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await fetch(GuardedResolver(guard, stub), f"http://mixed.test:{server.port}/")
        assert refused(caught.value, "loopback")
        assert server.connections == 0


async def test_system_resolution_through_aiohttp() -> None:
    """No stub: ``localhost`` resolved by getaddrinfo is refused, then allowed."""
    async with counting_server("127.0.0.1") as server:
        url = f"http://localhost:{server.port}/"
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await fetch(GuardedResolver(AddressGuard(allow_http=True)), url)
        assert refused(caught.value, "loopback")
        assert server.connections == 0
        allowed = AddressGuard(
            allowed=(ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")),
            allow_http=True,
        )
        assert await fetch(GuardedResolver(allowed), url) == 204
        assert server.connections == 1


@pytest.mark.parametrize("host", ["0x7f.1", "0x7f000001", "0177.0.0.1.0x0"])
async def test_numeric_forms_aiohttp_hands_to_the_resolver(host: str) -> None:
    """aiohttp asks its resolver about ``0x7f.1`` (not all digits), and getaddrinfo would
    read it as 127.0.0.1: refused, whether the guard resolves or wraps the system
    resolver. (``0177.0.0.1.0x0`` is no address at all: refused as a host.)"""
    async with counting_server("127.0.0.1") as server:
        url = f"http://{host}:{server.port}/"
        for resolver in (
            GuardedResolver(AddressGuard(allow_http=True)),
            GuardedResolver(AddressGuard(allow_http=True), aiohttp.ThreadedResolver()),
        ):
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await fetch(resolver, url)
            assert refusal_of(caught.value) is not None
            assert refusal_of(caught.value).reason in ("loopback", "host")  # type: ignore[union-attr]
        assert server.connections == 0


async def test_the_wrapped_resolvers_answers_are_judged() -> None:
    """Whatever the wrapped resolver answers is judged, not the name's spelling."""
    guard = AddressGuard(allow_http=True)
    stub = StubDNS({"innocent.test": [["::ffff:127.0.0.1"]]})
    with pytest.raises(DestinationRefused) as caught:
        await GuardedResolver(guard, stub).resolve("innocent.test", 443, socket.AF_UNSPEC)
    assert caught.value.refusal.reason == "loopback"
    assert isinstance(caught.value.__cause__, UnsafeDestination)


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/", "http://[::ffff:127.0.0.1]:{port}/"])
async def test_ip_literals_need_check_url(url: str) -> None:
    """aiohttp connects to an IP-literal host without asking its resolver, so check_url is
    what refuses it. The second half pins that aiohttp behaviour: should it change, this
    fails and the resolver becomes a second check of literals."""
    guard = AddressGuard(allow_http=True)
    async with counting_server("127.0.0.1") as server:
        target = url.format(port=server.port)
        with pytest.raises(UnsafeDestination) as caught:
            guard.check_url(target)
        assert caught.value.reason == "loopback"
        assert await fetch(GuardedResolver(guard), target) == 204
        assert server.connections == 1


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0177.0.0.1", "127.0.0.1."])
async def test_all_digit_legacy_forms_never_connect(host: str) -> None:
    """Forms aiohttp treats as addresses (digits and dots): check_url refuses them, and
    aiohttp on its own (or the resolver) does not connect either."""
    guard = AddressGuard(allow_http=True)
    async with counting_server("127.0.0.1") as server:
        url = f"http://{host}:{server.port}/"
        with pytest.raises(UnsafeDestination) as refusal:
            guard.check_url(url)
        assert refusal.value.reason == "loopback"
        with pytest.raises(aiohttp.ClientError):
            await fetch(GuardedResolver(guard), url)
        assert server.connections == 0


# --- notification channels ----------------------------------------------------------------

FIXED = ("hooks.slack.com", "*.webhook.office.com")


@pytest.mark.parametrize(
    ("host", "extra", "expected"),
    [
        ("hooks.slack.com", (), True),
        ("HOOKS.Slack.COM.", (), True),
        ("evilhooks.slack.com", (), False),
        ("hooks.slack.com.evil.test", (), False),
        ("slack.com", (), False),
        ("outlook.webhook.office.com", (), True),
        ("a.b.webhook.office.com", (), True),
        ("webhook.office.com", (), False),
        ("xwebhook.office.com", (), False),
        ("chat.internal.example", (), False),
        ("chat.internal.example", ("Chat.Internal.Example",), True),
        ("chat.internal.example", ("*.internal.example",), True),
        ("chat.internal.example", ("*",), False),
        ("bücher.example", ("xn--bcher-kva.example",), True),
        ("", ("*.example",), False),
    ],
)
def test_channel_hosts(host: str, extra: tuple[str, ...], expected: bool) -> None:
    assert channel_host_allowed(host, FIXED, extra) is expected
