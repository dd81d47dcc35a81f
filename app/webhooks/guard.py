"""Destination guard (interim; replaced by the full guard)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from app.core.settings import WebhookSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeDestination(OSError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Destination:
    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress | None


@dataclass(frozen=True)
class AddressGuard:
    allowed: tuple[Network, ...] = ()
    allow_http: bool = False

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> AddressGuard:
        return cls(
            allowed=tuple(ipaddress.ip_network(n, strict=False) for n in settings.allowed_networks),
            allow_http=settings.allow_http,
        )

    def refusal(self, address: IPAddress) -> str | None:
        if any(address in net for net in self.allowed):
            return None
        if address.is_loopback:
            return "loopback"
        if address.is_private or not address.is_global:
            return "private"
        return None

    def check_url(self, url: str) -> Destination:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http") or (scheme == "http" and not self.allow_http):
            raise UnsafeDestination("scheme", f"the scheme {scheme!r} is not allowed")
        if "@" in parts.netloc:
            raise UnsafeDestination("userinfo", "credentials in the URL are not allowed")
        host = (parts.hostname or "").lower()
        if not host:
            raise UnsafeDestination("host", "the URL has no host")
        port = parts.port or (443 if scheme == "https" else 80)
        address: IPAddress | None = None
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
        if address is not None and (reason := self.refusal(address)):
            raise UnsafeDestination(reason, f"the address {address} is {reason}")
        return Destination(url=url, scheme=scheme, host=host, port=port, address=address)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not found:
            raise UnsafeDestination("unresolvable", f"{host} does not resolve")
        for address in found:
            if reason := self.refusal(address):
                raise UnsafeDestination(reason, f"{host} resolves to a {reason} address")
        return found


class GuardedResolver(AbstractResolver):
    def __init__(self, guard: AddressGuard, resolver: AbstractResolver | None = None) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.guard.resolve(host, port)
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET6 if a.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in found
        ]

    async def close(self) -> None:
        return None


def channel_host_allowed(host: str, fixed_hosts: Iterable[str], extra: Iterable[str]) -> bool:
    host = host.lower()
    return any(host == h.lower() for h in [*fixed_hosts, *extra])


_unused: Any = aiohttp
