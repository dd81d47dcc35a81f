"""Who the client is: the connection's peer, or — only behind a trusted proxy — the
right-most address in ``X-Forwarded-For`` that is not itself a trusted proxy.

Nothing is believed by default (``FORMULA_OPS_TRUSTED_PROXIES`` is empty): anyone can
send the header, so trusting it from any peer would let a client pick the address the
failed-authentication limit counts and the audit trail records. uvicorn's own
``proxy_headers`` handling is turned off (``app/cli/server.py``) so this is the only place.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``text`` is; None for anything else, an IPv6 zone (``%…``, which may
    hold any text) included."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_block(address: str | None) -> str:
    """What counts as one client: an IPv4 address, or an IPv6 address's /64 (a single
    host or site is given a whole /64 and picks addresses from it freely)."""
    parsed = _address(address) if address else None
    if parsed is None:
        return address or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(e, strict=False) for e in entries))

    def trusts(self, address: str | None) -> bool:
        parsed = _address(address) if address else None
        return parsed is not None and any(parsed in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str | None:
        """The client's address, given the peer and the ``X-Forwarded-For`` header values
        (in the order received)."""
        if not self.networks or not self.trusts(peer):
            return peer
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        client = peer
        for hop in reversed(hops):
            if _address(hop) is None:
                break  # not written by a proxy we trust: stop at the last trusted hop
            client = str(_address(hop))
            if not self.trusts(client):
                break
        return client
