"""``/v1/tokens`` (admin): create, list, read, revoke, review."""

from __future__ import annotations

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from app.auth.deps import Admin
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.core.db import utcnow
from app.core.deps import CursorParamsDep, SessionDep, UnitOfWorkDep
from app.core.errors import problem_responses
from app.core.paths import V1
from app.core.schemas import PRINTABLE
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.tokens import service
from app.tokens.presenters import token_out
from app.tokens.schemas import ReviewItem, Token, TokenCreate, TokenCreated, TokenList, TokenReview

router = APIRouter(prefix=f"{V1}/tokens", tags=["tokens"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
TokenId = Path(min_length=1, max_length=64, pattern=PRINTABLE, description="The token's public id.")


@router.post(
    "",
    status_code=201,
    operation_id="createToken",
    summary="Create a token",
    response_model=TokenCreated,
    responses=problem_responses(
        *AUTH_ERRORS,
        *IDEMPOTENCY_ERRORS,
        validation=True,
    ),
)
async def create_token(
    body: TokenCreate,
    principal: Admin,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
) -> JSONResponse:
    """The response carries the token once; only its hash is kept."""
    async with uow:
        await idem.claim(uow)
        token, value = await service.create(uow, principal, body)
        created = TokenCreated(**token_out(token).model_dump(), token=value)
        response = JSONResponse(
            created.model_dump(mode="json"),
            status_code=201,
            headers={"Location": f"/v1/tokens/{token.id}"},
        )
        await idem.complete(uow.session, response)
    return response


@router.get(
    "",
    operation_id="listTokens",
    summary="List tokens",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_tokens(principal: Admin, session: SessionDep, page: CursorParamsDep) -> TokenList:
    rows, next_cursor = await service.list_page(session, page)
    now = utcnow()
    return TokenList(items=[token_out(t, now) for t in rows], next_cursor=next_cursor)


@router.get(
    "/review",
    operation_id="reviewTokens",
    summary="Access review",
    responses=problem_responses(*AUTH_ERRORS),
)
async def review_tokens(principal: Admin, session: SessionDep) -> TokenReview:
    """Admin tokens, tokens without expiry, unused for 90+ days, or expired but not revoked."""
    now = utcnow()
    found = await service.review(session)
    return TokenReview(
        generated_at=now,
        unused_days=service.UNUSED_DAYS,
        items=[ReviewItem(token=token_out(t, now), findings=f) for t, f in found],
    )


@router.get(
    "/{token_id}",
    operation_id="getToken",
    summary="Get a token",
    responses=problem_responses(*AUTH_ERRORS, service.TokenNotFound, validation=True),
)
async def get_token(principal: Admin, session: SessionDep, token_id: str = TokenId) -> Token:
    return token_out(await service.get(session, token_id))


@router.delete(
    "/{token_id}",
    operation_id="revokeToken",
    summary="Revoke a token",
    responses=problem_responses(*AUTH_ERRORS, service.TokenNotFound, validation=True),
)
async def revoke_token(principal: Admin, uow: UnitOfWorkDep, token_id: str = TokenId) -> Token:
    """Revocation takes effect on the token's next request."""
    async with uow:
        token = await service.revoke(uow, principal, token_id)
    return token_out(token)
