"""Secrets kept in the database but needed back in clear (a webhook's signing secret, a
notification channel's URL): sealed with AES-GCM under a key derived from the server
secret (``FORMULA_OPS_SECRET_KEY``) and a purpose, so one purpose's ciphertext never
opens as another's. Changing the server secret makes sealed values unreadable
(:class:`Unsealable`), never silently wrong."""

from __future__ import annotations

import base64
import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"


class Unsealable(ValueError):
    """Sealed under another server secret or purpose, or not a sealed value."""


class Sealer:
    def __init__(self, secret: bytes, purpose: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"formula-ops:{purpose}".encode()
        ).derive(secret)
        self._aead = AESGCM(key)
        self._purpose = purpose.encode()

    def seal(self, value: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), self._purpose)
        return f"{VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str) -> str:
        version, _, payload = sealed.partition(".")
        if version != VERSION:
            raise Unsealable("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(payload)
            return self._aead.decrypt(raw[:12], raw[12:], self._purpose).decode()
        except (InvalidTag, ValueError) as exc:
            raise Unsealable(
                "sealed with another server secret (FORMULA_OPS_SECRET_KEY changed?)"
            ) from exc


@functools.lru_cache(maxsize=16)
def sealer_for(secret: bytes, purpose: str) -> Sealer:
    """The :class:`Sealer` of ``secret`` and ``purpose``, built once: deriving its key
    (HKDF) costs more than sealing or opening a value, and a webhook delivery opens one
    or two secrets per attempt. A Sealer holds no state beyond its key."""
    return Sealer(secret, purpose)
