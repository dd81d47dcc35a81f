"""Standard Webhooks signing (https://www.standardwebhooks.com): what the public
``standardwebhooks`` and ``svix`` libraries verify as they are.

- secret: ``whsec_`` + base64 of 32 random bytes; the HMAC key is the decoded bytes;
- ``webhook-id``: the event's id, the same on every attempt (receivers dedupe by it);
- ``webhook-timestamp``: this attempt's Unix time in seconds;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, one per
  active secret, space-separated (during a rotation both the new and the old secret sign).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
SECRET_BYTES = 32
SECRET_PATTERN = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in secrets_),
    }
