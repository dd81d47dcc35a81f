"""``Idempotency-Key`` for creating POSTs: a retried request gets the original response.

- The key is scoped to the calling token and stored as a hash, with a fingerprint of
  method, path and body.
- The key is owned by its row, written **in the transaction of the change**: the route
  calls :meth:`Idempotency.claim` first in its transaction, which inserts the row under
  its unique constraint, and :meth:`Idempotency.complete` with the response before the
  commit. The change, the key and the replayable response commit together, or none of
  them does. Never owned by age: a duplicate of a request still inside its transaction
  waits briefly on the uncommitted row (PostgreSQL; on SQLite writers take turns), then
  replays what it committed or answers 409.
- Same key and request again (within ``idempotency_ttl_hours``): the stored status,
  headers and body, byte for byte, with ``Idempotent-Replayed: true``.
- Same key, different request: 422. A 4xx answer is stored and replayed like a success.
  A 5xx before the commit wrote nothing, the key row included, so the key is free again.
  Once the change committed the key is never released: whatever fails afterwards (the
  wait of ``Prefer: wait``, building the answer) answers with the stored response.
- Stored bodies are encrypted (AES-GCM) with a key derived from the server-side secret
  (``FORMULA_OPS_SECRET_KEY``) together with the Idempotency-Key: a token-creation
  response replays its secret, but neither the database alone nor the database plus a
  guessed Idempotency-Key reads it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.context import AppContext
from app.core.db import SharedTransaction, UnitOfWork, utcnow
from app.core.ids import new_id
from app.idempotency.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    IdempotentReplay,
    IdempotentResponseUnreadable,
)
from app.idempotency.models import COMPLETED, IN_FLIGHT, IdempotencyRecord

if TYPE_CHECKING:
    from fastapi.responses import Response

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# How long a duplicate waits on the uncommitted key row of the request it repeats before
# answering 409 (PostgreSQL ``lock_timeout``); only requests with the same key wait.
IN_FLIGHT_WAIT = "1s"
_LOCK_NOT_AVAILABLE = "55P03"
_STORED_HEADERS = ("content-type", "location", "retry-after", "preference-applied")


def _in_flight() -> IdempotencyKeyInFlight:
    return IdempotencyKeyInFlight(
        f"A request with this {HEADER} is still in progress; retry shortly",
        headers={"Retry-After": "1"},
    )


def _hash_key(token_id: str, key: str) -> str:
    return hashlib.sha256(f"{token_id}\n{key}".encode()).hexdigest()


def _fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def _cipher(secret: bytes, token_id: str, key: str) -> AESGCM:
    """HKDF-Extract keyed by the server secret over the Idempotency-Key (HMAC(secret,
    key)): reading a stored body takes both; bound to the calling token."""
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=secret,
        info=b"formula-ops idempotent response\n" + token_id.encode(),
    ).derive(key.encode())
    return AESGCM(derived)


@dataclass(frozen=True)
class _Stored:
    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def of(cls, response: Response) -> _Stored:
        headers = {k: v for k, v in response.headers.items() if k in _STORED_HEADERS}
        return cls(response.status_code, headers, bytes(response.body))

    def response(self, **extra: str) -> Response:
        from fastapi.responses import Response  # the worker purges keys without FastAPI

        headers = {**self.headers, **extra}
        media_type = headers.pop("content-type", None)
        return Response(self.body, status_code=self.status, headers=headers, media_type=media_type)


class Idempotency:
    """The request's key, if it sent one. In the transaction of its change a route calls
    :meth:`claim` first and :meth:`complete` last."""

    def __init__(
        self,
        secret: bytes = b"",
        token_id: str | None = None,
        key: str | None = None,
        *,
        method: str = "",
        path: str = "",
        fingerprint: str = "",
        ttl: dt.timedelta = dt.timedelta(hours=24),
    ) -> None:
        self.secret = secret
        self.token_id = token_id
        self.key = key
        self.method = method
        self.path = path
        self.fingerprint = fingerprint
        self.ttl = ttl
        self.record_id: str | None = None
        self.committed = False  # the change and its key row are durable
        self.stored: _Stored | None = None  # what a replay answers

    @property
    def active(self) -> bool:
        return self.key is not None

    @property
    def key_hash(self) -> str:
        assert self.token_id is not None
        assert self.key is not None
        return _hash_key(self.token_id, self.key)

    async def claim(self, uow: UnitOfWork) -> None:
        """Own the key in this transaction: its row, inserted under the unique constraint.

        A committed first use answers here (replay, or 422 for another request); a first
        use still inside its transaction makes this wait up to ``IN_FLIGHT_WAIT`` on its
        row, then answer 409. Either way nothing of this transaction is kept.
        """
        if not self.active:
            return
        existing = await _insert(uow.session, self, IN_FLIGHT, None)
        if existing is not None:
            raise _answer(self, existing)
        uow.after_commit(self._on_commit)

    async def _on_commit(self) -> None:
        self.committed = True

    async def complete(self, session: AsyncSession, response: Response) -> None:
        """Store ``response`` in the claiming transaction: it commits with the change."""
        if not self.active:
            return
        if self.record_id is None:
            raise RuntimeError("claim() the Idempotency-Key first in this transaction")
        stored = _Stored.of(response)
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.id == self.record_id)
            .values(state=COMPLETED, **_sealed(self, stored))
        )
        self.stored = stored

    async def replace(self, context: AppContext, response: Response) -> None:
        """Store a later answer to the same request (e.g. after ``Prefer: wait``). Best
        effort: if it cannot be stored, a replay answers the earlier response."""
        if not self.committed:
            return
        stored = _Stored.of(response)
        try:
            async with context.unit_of_work() as uow:
                await uow.session.execute(
                    update(IdempotencyRecord)
                    .where(IdempotencyRecord.id == self.record_id)
                    .values(**_sealed(self, stored))
                )
        except Exception as exc:  # the earlier answer stays the replayed one
            logger.warning("could not store a later idempotent answer (%s)", type(exc).__name__)
            return
        self.stored = stored


def _sealed(idem: Idempotency, stored: _Stored) -> dict[str, Any]:
    assert idem.token_id is not None
    assert idem.key is not None
    nonce = os.urandom(12)
    sealed = _cipher(idem.secret, idem.token_id, idem.key).encrypt(nonce, stored.body, None)
    return {
        "response_status": stored.status,
        "response_headers": stored.headers,
        "response_body": nonce + sealed,
    }


def _stale(record: IdempotencyRecord, now: dt.datetime) -> bool:
    """Expired, or an in-flight row committed by an earlier version (its change did not
    commit with it): such a row owns nothing."""
    return record.expires_at <= now or record.state != COMPLETED


async def _insert(
    session: AsyncSession, idem: Idempotency, state: str, stored: _Stored | None
) -> IdempotencyRecord | None:
    """Insert the key row; None when inserted, else the committed row that holds the key.

    On PostgreSQL an uncommitted row of the same key makes the insert wait on its
    transaction: for ``IN_FLIGHT_WAIT`` at most (``lock_timeout``, for this statement
    only), then 409. Other keys never wait on each other.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    try:
        return await _insert_row(session, idem, state, stored, postgres=postgres)
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            raise _in_flight() from None
        raise


def _insert_statement(values: dict[str, Any], *, postgres: bool) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id`` of the key row.

    On PostgreSQL the statement sets its own lock timeout and restores it (one round
    trip instead of ``SET LOCAL`` before and after): a CTE saves the current
    ``lock_timeout`` and sets ``IN_FLIGHT_WAIT`` (``set_config(…, true)``: until the
    transaction ends) before the row is inserted, and the RETURNING list puts the saved
    value back. RETURNING runs only for an inserted row: after a conflict the caller
    restores it (:func:`_restore_lock_timeout`)."""
    if not postgres:
        return (
            sqlite.insert(IdempotencyRecord)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["token_id", "key_hash"])
            .returning(IdempotencyRecord.id)
        )
    return _postgres_insert(tuple(values))


@functools.cache
def _postgres_insert(names: tuple[str, ...]) -> Any:
    """:func:`_insert_statement` on PostgreSQL for the columns ``names``, built once: the
    values are bind parameters named after their columns."""
    wait = select(
        func.current_setting("lock_timeout").label("previous"),
        func.set_config("lock_timeout", IN_FLIGHT_WAIT, True).label("waiting"),
    ).cte("key_wait")
    table: Any = IdempotencyRecord.__table__
    row = select(*(bindparam(n, type_=table.c[n].type) for n in names)).select_from(wait)
    restore = select(func.set_config("lock_timeout", wait.c.previous, True)).scalar_subquery()
    return (  # of the table, not the entity: the values are the statement's parameters
        postgresql.insert(table)
        .from_select(list(names), row)
        .on_conflict_do_nothing(index_elements=["token_id", "key_hash"])
        .returning(IdempotencyRecord.id, restore)
    )


async def _restore_lock_timeout(session: AsyncSession) -> None:
    await session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


async def _insert_row(
    session: AsyncSession,
    idem: Idempotency,
    state: str,
    stored: _Stored | None,
    *,
    postgres: bool,
) -> IdempotencyRecord | None:
    for _ in range(3):
        now = utcnow()
        record_id = new_id()
        values: dict[str, Any] = {
            "id": record_id,
            "token_id": idem.token_id,
            "key_hash": idem.key_hash,
            "fingerprint": idem.fingerprint,
            "method": idem.method,
            "path": idem.path,
            "state": state,
            "created_at": now,
            "expires_at": now + idem.ttl,
        }
        if stored is not None:
            values.update(_sealed(idem, stored))
        statement = _insert_statement(values, postgres=postgres)
        inserted = (await session.execute(statement, values if postgres else None)).first()
        if inserted is not None:
            idem.record_id = record_id
            return None
        if postgres:  # the conflict skipped the RETURNING list that restores it
            await _restore_lock_timeout(session)
        existing = await _committed(session, idem)
        if existing is not None and not _stale(existing, now):
            return existing
        await session.execute(  # purged meanwhile, or stale: take its place
            delete(IdempotencyRecord).where(
                IdempotencyRecord.token_id == idem.token_id,
                IdempotencyRecord.key_hash == idem.key_hash,
                or_(IdempotencyRecord.expires_at <= now, IdempotencyRecord.state != COMPLETED),
            )
        )
    raise _in_flight()


async def _committed(session: AsyncSession, idem: Idempotency) -> IdempotencyRecord | None:
    return await session.scalar(
        select(IdempotencyRecord)
        .where(
            IdempotencyRecord.token_id == idem.token_id,
            IdempotencyRecord.key_hash == idem.key_hash,
        )
        .execution_options(populate_existing=True)
    )


def _answer(idem: Idempotency, record: IdempotencyRecord) -> Exception:
    """What a repeated request answers, given the committed row of its key."""
    if record.fingerprint != idem.fingerprint:
        return IdempotencyKeyReused(
            f"This {HEADER} was used for a different request; use a new key"
        )
    assert record.response_body is not None
    assert record.response_status is not None
    assert idem.token_id is not None
    assert idem.key is not None
    sealed = record.response_body
    try:
        body = _cipher(idem.secret, idem.token_id, idem.key).decrypt(sealed[:12], sealed[12:], None)
    except InvalidTag:
        return IdempotentResponseUnreadable(
            f"The request with this {HEADER} was carried out, but its stored response was "
            "sealed with another server secret (FORMULA_OPS_SECRET_KEY changed); read the "
            "resource, or use a new key for a new request"
        )
    stored = _Stored(record.response_status, dict(record.response_headers or {}), body)
    return IdempotentReplay(stored.response(**{REPLAYED_HEADER: "true"}))


async def begin(
    context: AppContext,
    token_id: str,
    key: str,
    method: str,
    path: str,
    body: bytes,
    *,
    shared: SharedTransaction | None = None,
) -> Idempotency:
    """The request's :class:`Idempotency`; raises the stored answer of a committed first
    use (replay, or 422 for a different request). Read in the request's ``shared``
    transaction when it has one."""
    idem = Idempotency(
        context.secret_key,
        token_id,
        key,
        method=method,
        path=path,
        fingerprint=_fingerprint(method, path, body),
        ttl=dt.timedelta(hours=context.settings.idempotency_ttl_hours),
    )
    if shared is not None:
        session = await shared.session()
        existing = await _committed(session, idem)
        if existing is not None:
            session.expunge(existing)
    else:
        async with context.sessionmaker() as session:
            existing = await _committed(session, idem)
    if existing is not None and not _stale(existing, utcnow()):
        raise _answer(idem, existing)
    return idem


async def store_refusal(context: AppContext, idem: Idempotency, response: Response) -> None:
    """Store a 4xx answer (its transaction rolled back) for replay, in a transaction of
    its own; best effort."""
    try:
        async with context.unit_of_work() as uow:
            await _insert(uow.session, idem, COMPLETED, _Stored.of(response))
    except Exception as error:
        logger.warning("could not store a refused idempotent request (%s)", type(error).__name__)


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)
