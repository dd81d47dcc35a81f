"""Request headers that neither an endpoint's custom headers nor a channel's URL may set:
the signature's own, those the HTTP client owns, and those a proxy or ingress trusts to
route or to identify the client."""

from __future__ import annotations

# Headers a caller may not set: the signature's, and those the HTTP client owns.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "user-agent",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)


def is_reserved(name: str) -> bool:
    lower = name.lower()
    return (
        lower in RESERVED_HEADERS
        or lower.startswith(("webhook-", "x-forwarded-"))
        or lower in ("forwarded", "x-real-ip")
    )
