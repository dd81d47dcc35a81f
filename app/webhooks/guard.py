"""The SSRF guard: webhook and notification-channel destinations may never be turned
against our own network.

A destination URL is given by a user, so it may name loopback, a private network, the
cloud metadata address or any other place only this machine can reach. Two checks stop
that, and both are needed:

* ``AddressGuard.check_url`` — syntax, no DNS — at creation and before every request:
  scheme, userinfo, port, and a host that is an IP literal in any form a resolver would
  accept (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``[::ffff:127.0.0.1]``…). aiohttp
  connects to an IP-literal host without asking its resolver, so this is the only check
  such a URL meets.
* ``GuardedResolver`` — aiohttp's resolver for names: it resolves, judges every address
  and hands aiohttp exactly the addresses it judged, so a name cannot be checked against
  one answer and connected to another (DNS rebinding). ``AddressGuard.resolve`` is the
  same judgement for a check at creation time. It lives in :mod:`app.webhooks.resolver`,
  the one module of the guard that imports aiohttp (the API and an idle worker load
  this one without it).

Addresses are judged against an explicit table of the IANA special-purpose ranges rather
than ``ipaddress``' ``is_global``, whose lists changed between Python patch releases.
Allowed: globally routable unicast, or an address inside a network the operator allowed
(``FORMULA_OPS_WEBHOOKS__ALLOWED_NETWORKS``). IPv6 forms that carry an IPv4 address
(mapped, compatible, 6to4, NAT64) are judged by the IPv4 address they carry.

Reason words (``UnsafeDestination.reason``): ``url``, ``scheme``, ``userinfo``, ``host``,
``port``, ``loopback``, ``private``, ``link_local``, ``cgnat``, ``multicast``,
``broadcast``, ``reserved``, ``documentation``, ``benchmarking``, ``unspecified``,
``mapped``, ``unresolvable``. A refusal's message names the scheme, host or port at most,
never userinfo, path or query (they may hold secrets), nor the address a name resolved to
(that would map the internal network for whoever registers endpoints); the address is on
``UnsafeDestination.address`` for the server's own logs.

How a refusal reaches an aiohttp caller: ``GuardedResolver`` raises ``DestinationRefused``
(an ``OSError``, errno ``EACCES``, ``__cause__`` and ``.refusal`` the
``UnsafeDestination``); aiohttp wraps it as ``aiohttp.ClientConnectorDNSError`` like any
failed lookup, so the request fails as a connection error without a connection attempt.
``refusal_of(exc)`` finds the ``UnsafeDestination`` in whatever the caller caught.
The caller must not follow redirects (``allow_redirects=False``): a redirect's target
did not pass ``check_url``; nor go through a proxy (``trust_env=False``, aiohttp's
default): the proxy, not this resolver, would resolve the destination.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from app.core.settings import WebhookSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Name → addresses as text (IPv6 may carry a ``%zone``). Injected by tests to stub DNS.
Resolve = Callable[[str, int], Awaitable[list[str]]]


class UnsafeDestination(ValueError):
    """A destination refused by the guard. ``reason`` is a short machine word (listed in
    the module's docstring); ``str(exc)`` is a sentence without URL secrets."""

    def __init__(self, reason: str, message: str, *, address: IPAddress | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.address = address


class DestinationRefused(OSError):
    """What ``GuardedResolver`` raises: an ``OSError`` so that aiohttp reports it as a
    connection (DNS) error; ``refusal`` (also ``__cause__``) is the ``UnsafeDestination``."""

    def __init__(self, refusal: UnsafeDestination) -> None:
        super().__init__(errno.EACCES, str(refusal))
        self.refusal = refusal


def refusal_of(exc: BaseException) -> UnsafeDestination | None:
    """The guard's refusal behind ``exc`` (an aiohttp ``ClientConnectorDNSError``, a
    ``DestinationRefused``, an ``UnsafeDestination``…), or None if the guard refused
    nothing."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UnsafeDestination):
            return current
        if isinstance(current, DestinationRefused):
            return current.refusal
        os_error = getattr(current, "os_error", None)  # aiohttp.ClientConnectorError
        if isinstance(os_error, BaseException):
            pending.append(os_error)
        pending.extend((current.__cause__, current.__context__))
    return None


def _v4(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def _v6(text: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(text)


# First match wins (a narrower range before the range holding it).
_IPV4_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_v4("0.0.0.0/32"), "unspecified"),
    (_v4("0.0.0.0/8"), "reserved"),  # "this network"
    (_v4("10.0.0.0/8"), "private"),
    (_v4("100.64.0.0/10"), "cgnat"),
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("169.254.0.0/16"), "link_local"),  # the cloud metadata address among them
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.0.0.0/24"), "reserved"),  # IETF protocol assignments
    (_v4("192.0.2.0/24"), "documentation"),
    (_v4("192.88.99.0/24"), "reserved"),  # former 6to4 relay anycast
    (_v4("192.168.0.0/16"), "private"),
    (_v4("198.18.0.0/15"), "benchmarking"),
    (_v4("198.51.100.0/24"), "documentation"),
    (_v4("203.0.113.0/24"), "documentation"),
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("255.255.255.255/32"), "broadcast"),
    (_v4("240.0.0.0/4"), "reserved"),
)
_IPV6_RANGES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_v6("::/128"), "unspecified"),
    (_v6("::1/128"), "loopback"),
    (_v6("::ffff:0:0:0/96"), "mapped"),  # SIIT translated addresses
    (_v6("64:ff9b:1::/48"), "private"),  # local-use NAT64
    (_v6("100::/64"), "reserved"),  # discard-only
    (_v6("2001:2::/48"), "benchmarking"),
    (_v6("2001:db8::/32"), "documentation"),
    (_v6("2001::/23"), "reserved"),  # IETF protocol assignments, Teredo among them
    (_v6("3fff::/20"), "documentation"),
    (_v6("fc00::/7"), "private"),  # unique local
    (_v6("fe80::/10"), "link_local"),
    (_v6("fec0::/10"), "private"),  # former site-local
    (_v6("ff00::/8"), "multicast"),
)
_GLOBAL_UNICAST = _v6("2000::/3")
_MAPPED = _v6("::ffff:0:0/96")
_COMPATIBLE = _v6("::/96")
_NAT64 = _v6("64:ff9b::/96")
_SIXTOFOUR = _v6("2002::/16")

_ARTICLE = {
    "loopback": "a loopback",
    "private": "a private",
    "link_local": "a link-local",
    "cgnat": "a shared (CGNAT)",
    "multicast": "a multicast",
    "broadcast": "the broadcast",
    "reserved": "a reserved",
    "documentation": "a documentation",
    "benchmarking": "a benchmarking",
    "unspecified": "the unspecified",
    "mapped": "an IPv4-embedding IPv6",
}


def _describe(reason: str) -> str:
    return f"{_ARTICLE.get(reason, 'a refused')} address"


_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMBER = re.compile(r"0x[0-9a-f]*|[0-9]+")


def _ipv4_number(part: str) -> int | None:
    """One part of an ``inet_aton`` address: decimal, ``0x`` hex or ``0``-led octal."""
    if part.startswith("0x"):
        digits, base = part[2:] or "0", 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits.isascii() or not digits.isalnum():
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read the way ``inet_aton`` (and so ``getaddrinfo``) reads it: one to four
    parts, the last filling the remaining bytes (``127.1``, ``2130706433``, ``0x7f.1``).
    None if it is not such an address."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(parts):
        return None
    numbers = [_ipv4_number(part) for part in parts]
    value = 0
    for number in numbers[:-1]:
        if number is None or number > 255:
            return None
        value = value * 256 + number
    last = numbers[-1]
    room = 256 ** (5 - len(parts))
    if last is None or last >= room:
        return None
    return ipaddress.IPv4Address(value * room + last)


def _host_address(host: str) -> IPAddress | None:
    """The address ``host`` (lowercased, IPv6 without brackets) denotes if it is an IP
    literal in any form, None if it is a name. Raises UnsafeDestination('host') for
    anything neither a well-formed name nor an address — a resolver might still read
    something into it."""
    if not host:
        raise UnsafeDestination("host", "the destination has no host")
    if ":" in host:
        text = host.partition("%")[0]  # a zone (``%25eth0``) does not change the judgement
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise UnsafeDestination("host", "the destination's host is not valid") from None
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if _NUMBER.fullmatch(labels[-1]):
        # A name ending in a number is an IPv4 address to a URL parser and to inet_aton.
        address = _parse_ipv4(name)
        if address is None:
            raise UnsafeDestination("host", "the destination's host is not a valid address")
        return address
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UnsafeDestination("host", "the destination's host is not a valid name")
    return None


def _parse_resolved(text: str) -> IPAddress | None:
    address, _, zone = text.partition("%")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if zone and isinstance(parsed, ipaddress.IPv6Address):
        return ipaddress.IPv6Address(f"{address}%{zone}")
    return parsed


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the event loop's ``getaddrinfo`` gives ``host`` (both families)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[str] = []
    for family, _, _, _, sockaddr in infos:
        text = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
            text = f"{text.partition('%')[0]}%{sockaddr[3]}"
        found.append(text)
    return found


@dataclass(frozen=True)
class Destination:
    """A URL that passed ``check_url``; request ``url`` (normalised), not the text given."""

    url: str
    scheme: str
    host: str  # lowercased, IDNA-encoded; IPv6 without brackets
    port: int
    address: IPAddress | None  # set when the host is an IP literal


@dataclass(frozen=True)
class AddressGuard:
    allowed: tuple[Network, ...] = ()
    allow_http: bool = False
    resolver: Resolve | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(
        cls, settings: WebhookSettings, resolver: Resolve | None = None
    ) -> AddressGuard:
        return cls(
            allowed=tuple(ipaddress.ip_network(n, strict=False) for n in settings.allowed_networks),
            allow_http=settings.allow_http,
            resolver=resolver,
        )

    def _is_allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allowed)

    def refusal(self, address: IPAddress) -> str | None:
        """None if a connection to ``address`` is allowed, else the reason word."""
        if self._is_allowed(address):
            return None
        if isinstance(address, ipaddress.IPv4Address):
            for network, reason in _IPV4_RANGES:
                if address in network:
                    return reason
            return None
        plain = ipaddress.IPv6Address(int(address))  # without a zone
        if plain in _MAPPED:
            # The same host over a dual-stack socket: the allowed networks apply as well.
            return self.refusal(ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF))
        embedded: ipaddress.IPv4Address | None = None
        if plain in _COMPATIBLE and int(plain) > 1:
            # Deprecated "IPv4-compatible" form: never a real destination.
            embedded_reason = self._ipv4_refusal(ipaddress.IPv4Address(int(plain)))
            return embedded_reason or "mapped"
        if plain in _NAT64:
            embedded = ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF)
        elif plain in _SIXTOFOUR:
            embedded = plain.sixtofour
        if embedded is not None:
            return self._ipv4_refusal(embedded)
        for network6, reason in _IPV6_RANGES:
            if plain in network6:
                return reason
        if plain not in _GLOBAL_UNICAST:
            return "reserved"
        return None

    def _ipv4_refusal(self, address: ipaddress.IPv4Address) -> str | None:
        """The IPv4 table alone, for an address a translator reaches on its own side: the
        allowed networks name our side, not the translator's."""
        for network, reason in _IPV4_RANGES:
            if address in network:
                return reason
        return None

    def judge(self, address: IPAddress, host: str, *, resolved: bool = False) -> None:
        """Raise UnsafeDestination if ``address`` (that of ``host``) is refused."""
        reason = self.refusal(address)
        if reason is not None:
            verb = "resolves to" if resolved else "is"
            message = f"the destination's host {host} {verb} {_describe(reason)}"
            raise UnsafeDestination(reason, message, address=address)

    def check_url(self, url: str) -> Destination:
        """Syntax-level check, no DNS; raises UnsafeDestination. An IP-literal host in any
        form is judged here; a name is left to ``resolve`` / ``GuardedResolver``."""
        import yarl  # with the first URL checked: not in a process that checks none

        try:
            parsed = yarl.URL(url)
        except (ValueError, TypeError):
            raise UnsafeDestination("url", "the destination is not a valid URL") from None
        scheme = parsed.scheme.lower()
        if scheme not in ("https", "http"):
            raise UnsafeDestination("scheme", "the destination must be an https:// URL")
        if scheme == "http" and not self.allow_http:
            raise UnsafeDestination(
                "scheme", "the destination must be https:// (http:// is not allowed)"
            )
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise UnsafeDestination(
                "userinfo", "the destination URL must not carry a user name or password"
            )
        host = (parsed.raw_host or "").lower()
        address = _host_address(host)
        port = parsed.port
        if port is None or not 1 <= port <= 65535:
            raise UnsafeDestination("port", "the destination's port must be 1 to 65535")
        if address is not None:
            self.judge(address, host)
            if isinstance(address, ipaddress.IPv4Address):
                # ``127.1``, ``0x7f000001``… written the one way aiohttp accepts (it refuses
                # the legacy forms) and means: the address just judged.
                host = str(address)
                parsed = parsed.with_host(host)
        else:
            name = host.rstrip(".")
            if name == "localhost" or name.endswith(".localhost"):
                raise UnsafeDestination("loopback", f"the destination's host {host} is loopback")
        return Destination(url=str(parsed), scheme=scheme, host=host, port=port, address=address)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses ``host`` resolves to; UnsafeDestination if there is none or if
        any of them is refused."""
        host = host.lower()
        literal = _host_address(host)
        if literal is not None:
            self.judge(literal, host)
            return [literal]
        try:
            found = await (self.resolver or system_resolve)(host, port)
        except OSError:
            raise UnsafeDestination(
                "unresolvable", f"the destination's host {host} does not resolve"
            ) from None
        addresses: list[IPAddress] = []
        for text in found:
            address = _parse_resolved(text)
            if address is None:
                raise UnsafeDestination(
                    "unresolvable", f"the destination's host {host} resolves to a non-address"
                )
            self.judge(address, host, resolved=True)
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise UnsafeDestination("unresolvable", f"the destination's host {host} has no address")
        return addresses


def _normalise_name(host: str) -> str | None:
    text = host.strip().rstrip(".").lower()
    if not text:
        return None
    import yarl

    try:
        encoded = yarl.URL.build(scheme="https", host=text).raw_host
    except (ValueError, UnicodeError):
        return None
    return encoded.lower() if encoded else None


def channel_host_allowed(host: str, fixed_hosts: Iterable[str], extra: Iterable[str]) -> bool:
    """Whether a notification channel may contact ``host``: an exact match with one of
    ``fixed_hosts`` (the chat services' own) or ``extra`` (``FORMULA_OPS_WEBHOOKS__CHANNEL_
    HOSTS``), or a match of a ``*.suffix`` entry (a subdomain, not the suffix itself).
    Case-insensitive, IDNA-aware, a trailing dot ignored. A bare ``*`` matches nothing."""
    name = _normalise_name(host)
    if name is None:
        return False
    for entry in (*fixed_hosts, *extra):
        pattern = entry.strip().lower()
        if pattern.startswith("*."):
            suffix = _normalise_name(pattern[2:])
            if suffix and name.endswith("." + suffix):
                return True
        elif pattern and pattern != "*" and _normalise_name(pattern) == name:
            return True
    return False
