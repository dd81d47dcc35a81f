"""The ``Idempotency-Key`` header of a creating POST, as a FastAPI dependency: the
request's :class:`~app.idempotency.service.Idempotency`, and what it answers when the
route fails (a stored response once the change committed; a stored 4xx otherwise)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request

from app.auth.deps import CurrentPrincipal
from app.core.context import AppContext
from app.core.deps import ContextDep, SharedTransactionDep
from app.core.errors import render_error
from app.idempotency import service
from app.idempotency.errors import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    IdempotentReplay,
    IdempotentResponseUnreadable,
    MalformedIdempotencyKey,
)
from app.idempotency.service import HEADER, Idempotency

logger = logging.getLogger(__name__)

KEY = re.compile(r"^[\x20-\x7e]{1,255}$")

_KEY_ANSWERS = (
    IdempotentReplay,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    IdempotentResponseUnreadable,
)


async def _store_refusal(
    context: AppContext, request: Request, idem: Idempotency, exc: Exception
) -> None:
    """A 4xx answer (its transaction rolled back) is stored for replay; a 5xx is not."""
    response = render_error(request, exc)
    if response is None or response.status_code >= 500:
        return
    await service.store_refusal(context, idem, response)


async def idempotency(
    request: Request,
    context: ContextDep,
    principal: CurrentPrincipal,
    shared: SharedTransactionDep,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="1-255 printable ASCII characters; a retry with the same key and "
            "body returns the original response. A malformed key is a 400 problem.",
            # documented, and checked below (a malformed key is 400, not 422)
            json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": KEY.pattern},
        ),
    ] = None,
) -> AsyncIterator[Idempotency]:
    if key is None:
        yield Idempotency()
        return
    if not KEY.match(key):
        raise MalformedIdempotencyKey(f"{HEADER} must be 1-255 printable ASCII characters")
    token_id = principal.token_id or principal.name
    body = await request.body()
    idem = await service.begin(
        context, token_id, key, request.method, request.url.path, body, shared=shared
    )
    try:
        yield idem
    except _KEY_ANSWERS:
        raise
    except Exception as exc:
        if idem.committed and idem.stored is not None:
            # The change is durable and its key kept: answer what was stored, never
            # "nothing was changed".
            logger.warning(
                "%s %s failed after its change committed (%s); answering the stored response",
                request.method,
                request.url.path,
                type(exc).__name__,
            )
            raise IdempotentReplay(idem.stored.response()) from exc
        if shared is not None:
            await shared.close()  # refused before its change began: end the reads first
        await _store_refusal(context, request, idem, exc)
        raise


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
