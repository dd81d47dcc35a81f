"""aiohttp's resolver through the SSRF guard (:mod:`app.webhooks.guard`, whose docstring
says how a refusal reaches an aiohttp caller). A module of its own so that importing the
guard, which the API and the webhook and channel services do, does not import aiohttp:
only the sender (:mod:`app.webhooks.sender`) imports this, when it opens its session.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from app.webhooks.guard import (
    AddressGuard,
    DestinationRefused,
    UnsafeDestination,
    _host_address,
    _parse_resolved,
)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver through the guard: aiohttp connects only to the addresses judged
    in this very lookup. Without ``resolver`` it resolves with ``guard.resolve`` (the
    guard's injected resolver or ``getaddrinfo``, every family judged whatever family
    aiohttp asks for); with one, it judges that resolver's answers (for the family asked;
    aiohttp asks for any by default) and returns them unchanged. A refusal raises
    ``DestinationRefused``.

    ``close()`` closes the wrapped resolver (aiohttp does not close a resolver it was
    given)."""

    def __init__(self, guard: AddressGuard, resolver: AbstractResolver | None = None) -> None:
        self._guard = guard
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            return await self._resolve(host, port, family)
        except UnsafeDestination as refusal:
            raise DestinationRefused(refusal) from refusal

    async def _resolve(
        self, host: str, port: int, family: socket.AddressFamily
    ) -> list[ResolveResult]:
        if self._resolver is None:
            addresses = await self._guard.resolve(host, port)
            results = [
                ResolveResult(
                    hostname=host,
                    host=str(address),
                    port=port,
                    family=socket.AF_INET if address.version == 4 else socket.AF_INET6,
                    proto=socket.IPPROTO_TCP,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
                for address in addresses
            ]
            if family != socket.AF_UNSPEC:
                results = [result for result in results if result["family"] == family]
        else:
            literal = _host_address(host.lower())
            if literal is not None:
                self._guard.judge(literal, host.lower())
            try:
                results = await self._resolver.resolve(host, port, family)
            except OSError:
                raise UnsafeDestination(
                    "unresolvable", f"the destination's host {host.lower()} does not resolve"
                ) from None
            for result in results:
                address = _parse_resolved(result["host"])
                if address is None:
                    raise UnsafeDestination(
                        "unresolvable",
                        f"the destination's host {host.lower()} resolves to a non-address",
                    )
                self._guard.judge(address, host.lower(), resolved=True)
        if not results:
            raise UnsafeDestination(
                "unresolvable", f"the destination's host {host.lower()} has no address"
            )
        return results

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
