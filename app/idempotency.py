"""``Idempotency-Key`` for creating POSTs: a retried request gets the original response.

- The key is scoped to the calling token and stored as a hash, with a fingerprint of
  method, path and body.
- First use: an *in-flight* row is committed at once, so a concurrent duplicate gets
  409. The route stores its response with :meth:`Idempotency.complete` **in the
  transaction of the change**: the resource and its replayable response commit together.
- Same key and request again (within ``idempotency_ttl_hours``): the stored status,
  headers and body, byte for byte, with ``Idempotent-Replayed: true``.
- Same key, different request: 422. A 4xx answer is stored and replayed like a success;
  a 5xx answer releases the key (nothing was written).
- Stored bodies are encrypted (AES-GCM) with a key derived from the Idempotency-Key
  itself, which only the client holds: a token-creation response replays its secret,
  but the database never holds it readable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Depends, Header, Request
from fastapi.responses import Response
from sqlalchemy import JSON, Index, LargeBinary, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.auth.deps import CurrentPrincipal
from app.context import AppContext
from app.db import Base, utcnow
from app.deps import ContextDep
from app.errors import AppError, BadRequest, render_error
from app.ids import new_id

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
IN_FLIGHT_LOCK = dt.timedelta(seconds=60)
_STORED_HEADERS = ("content-type", "location", "retry-after", "preference-applied")


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_key"
    __table_args__ = (
        UniqueConstraint("token_id", "key_hash"),
        Index("ix_idempotency_key_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_id: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(16))  # in_flight | completed
    locked_until: Mapped[dt.datetime | None]
    response_status: Mapped[int | None]
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]


class MalformedIdempotencyKey(BadRequest):
    type = "/problems/malformed-idempotency-key"
    title = "Malformed Idempotency-Key"


class IdempotencyKeyInFlight(AppError):
    type = "/problems/idempotency-key-in-flight"
    title = "Request with this Idempotency-Key in progress"
    status = 409


class IdempotencyKeyReused(AppError):
    type = "/problems/idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"
    status = 422


class IdempotentReplay(Exception):
    """Raised by the dependency to answer with a stored response."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _hash_key(token_id: str, key: str) -> str:
    return hashlib.sha256(f"{token_id}\n{key}".encode()).hexdigest()


def _fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def _cipher(token_id: str, key: str) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=token_id.encode(),
        info=b"formula-ops idempotent response",
    ).derive(key.encode())
    return AESGCM(derived)


class Idempotency:
    """The request's key, if it sent one; routes call :meth:`complete` in their transaction."""

    def __init__(self, token_id: str | None = None, key: str | None = None) -> None:
        self.token_id = token_id
        self.key = key
        self.record_id: str | None = None
        self.completed = False

    @property
    def active(self) -> bool:
        return self.record_id is not None

    async def complete(self, session: AsyncSession, response: Response) -> None:
        """Store ``response`` (status, headers, body) in the caller's transaction."""
        if not self.active:
            return
        await _store(session, self, response)
        self.completed = True

    async def replace(self, context: AppContext, response: Response) -> None:
        """Store a later answer to the same request (e.g. after ``Prefer: wait``)."""
        if not self.active:
            return
        async with context.unit_of_work() as uow:
            await _store(uow.session, self, response)


async def _store(session: AsyncSession, idem: Idempotency, response: Response) -> None:
    assert idem.token_id is not None
    assert idem.key is not None
    record = await session.get(IdempotencyRecord, idem.record_id)
    if record is None:  # purged or taken over; nothing to keep
        return
    nonce = os.urandom(12)
    sealed = _cipher(idem.token_id, idem.key).encrypt(nonce, bytes(response.body), None)
    record.state = "completed"
    record.locked_until = None
    record.response_status = response.status_code
    record.response_headers = {
        name: value for name, value in response.headers.items() if name in _STORED_HEADERS
    }
    record.response_body = nonce + sealed
    await session.flush()


def _replay(record: IdempotencyRecord, token_id: str, key: str) -> Response:
    assert record.response_body is not None
    assert record.response_status is not None
    body = _cipher(token_id, key).decrypt(
        record.response_body[:12], record.response_body[12:], None
    )
    headers = dict(record.response_headers or {})
    headers[REPLAYED_HEADER] = "true"
    media_type = headers.pop("content-type", None)
    return Response(
        body, status_code=record.response_status, headers=headers, media_type=media_type
    )


async def _begin(
    context: AppContext, token_id: str, key: str, method: str, path: str, fingerprint: str
) -> Idempotency:
    key_hash = _hash_key(token_id, key)
    now = utcnow()
    ttl = dt.timedelta(hours=context.settings.idempotency_ttl_hours)
    idem = Idempotency(token_id, key)
    async with context.unit_of_work() as uow:
        existing = await uow.session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.token_id == token_id, IdempotencyRecord.key_hash == key_hash
            )
        )
        if existing is not None and existing.expires_at <= now:
            await uow.session.delete(existing)
            await uow.session.flush()
            existing = None
        if existing is None:
            record = IdempotencyRecord(
                token_id=token_id,
                key_hash=key_hash,
                fingerprint=fingerprint,
                method=method,
                path=path,
                state="in_flight",
                locked_until=now + IN_FLIGHT_LOCK,
                created_at=now,
                expires_at=now + ttl,
            )
            uow.session.add(record)
            try:
                await uow.session.flush()
            except IntegrityError:  # a concurrent first use won; look again
                raise _Retry() from None
            idem.record_id = record.id
            return idem
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                f"This {HEADER} was used for a different request; use a new key"
            )
        if existing.state == "completed":
            raise IdempotentReplay(_replay(existing, token_id, key))
        if existing.locked_until is not None and existing.locked_until > now:
            raise IdempotencyKeyInFlight(
                f"A request with this {HEADER} is still in progress; retry shortly",
                headers={"Retry-After": "1"},
            )
        # The first request died before committing anything: take the key over.
        existing.locked_until = now + IN_FLIGHT_LOCK
        idem.record_id = existing.id
        return idem


class _Retry(Exception):
    pass


async def _finish_failed(
    context: AppContext, request: Request, idem: Idempotency, exc: Exception
) -> None:
    """After an error: keep a 4xx answer for replay, release the key after a 5xx."""
    response = render_error(request, exc)
    try:
        async with context.unit_of_work() as uow:
            if response is not None and response.status_code < 500:
                await _store(uow.session, idem, response)
            else:
                await uow.session.execute(
                    delete(IdempotencyRecord).where(IdempotencyRecord.id == idem.record_id)
                )
    except Exception:
        logger.exception("could not settle an idempotency key after an error")


async def idempotency(
    request: Request,
    context: ContextDep,
    principal: CurrentPrincipal,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="1-255 printable ASCII characters; a retry with the same key and "
            "body returns the original response. A malformed key is a 400 problem.",
            # documented, and checked below (a malformed key is 400, not 422)
            json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": _KEY.pattern},
        ),
    ] = None,
) -> AsyncIterator[Idempotency]:
    if key is None:
        yield Idempotency()
        return
    if not _KEY.match(key):
        raise MalformedIdempotencyKey(f"{HEADER} must be 1-255 printable ASCII characters")
    token_id = principal.token_id or principal.name
    body = await request.body()
    fingerprint = _fingerprint(request.method, request.url.path, body)
    for _ in range(3):
        try:
            idem = await _begin(
                context, token_id, key, request.method, request.url.path, fingerprint
            )
            break
        except _Retry:
            continue
    else:
        raise IdempotencyKeyInFlight(
            f"A request with this {HEADER} is still in progress; retry shortly",
            headers={"Retry-After": "1"},
        )
    try:
        yield idem
    except Exception as exc:
        await _finish_failed(context, request, idem, exc)
        raise
    if not idem.completed:
        await _finish_failed(context, request, idem, RuntimeError("response not stored"))


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)
