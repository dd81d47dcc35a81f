"""The token format: ``fops_<public id>_<secret><checksum>``.

- public id: 16 characters of lowercase base32, time-ordered (48-bit milliseconds +
  32 random bits), so token ids sort by creation like every other id;
- secret: 32 characters of base62 (about 190 bits), stored only as its SHA-256;
- checksum: 6 base62 characters of CRC32 over everything before it, so a mistyped or
  truncated token is refused before any database lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import zlib
from dataclasses import dataclass

from app.core.credentials import TOKEN_PREFIX as PREFIX

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's alphabet, lowercase
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(r"^fops_([0-9a-hjkmnp-tv-z]{16})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})$")
TOKEN_ID = re.compile(r"^[0-9a-hjkmnp-tv-z]{16}$")


@dataclass(frozen=True)
class ParsedToken:
    token_id: str
    secret: str


def new_token_id() -> str:
    value = (int(time.time() * 1000) << 32) | secrets.randbits(32)
    chars = []
    for _ in range(16):
        value, digit = divmod(value, 32)
        chars.append(_BASE32[digit])
    return "".join(reversed(chars))


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), 6)


def new_token(token_id: str) -> tuple[str, str]:
    """A new token string for ``token_id`` and its secret part."""
    secret = "".join(secrets.choice(_BASE62) for _ in range(32))
    body = f"{PREFIX}_{token_id}_{secret}"
    return body + _checksum(body), secret


def parse_token(value: str) -> ParsedToken | None:
    """The token's id and secret, or None when it is not a well-formed token."""
    match = _TOKEN.match(value)
    if match is None:
        return None
    token_id, secret, checksum = match.groups()
    if not hmac.compare_digest(_checksum(f"{PREFIX}_{token_id}_{secret}"), checksum):
        return None
    return ParsedToken(token_id, secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
