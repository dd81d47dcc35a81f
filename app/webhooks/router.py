"""``/v1/webhooks`` (endpoints, their secret, test, delivery log) and
``/v1/webhook-deliveries`` (one delivery, redelivery); operators only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response

from app.auth.deps import Operator
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.core.deps import ContextDep, CursorParamsDep, IfMatch, SessionDep, UnitOfWorkDep
from app.core.errors import BadRequest, PreconditionFailed, problem_responses
from app.core.paths import V1
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS
from app.webhooks import delivery as webhook_delivery
from app.webhooks import presenters, service
from app.webhooks.schemas import (
    EVENT_TYPE,
    DeliveryDetail,
    DeliveryList,
    DeliveryOut,
    DeliveryStatus,
    SecretRotated,
    TestResult,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookOut,
    WebhookUpdate,
)

router = APIRouter(prefix=f"{V1}/webhooks", tags=["webhooks"])
deliveries_router = APIRouter(prefix=f"{V1}/webhook-deliveries", tags=["webhooks"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
ID = r"^[0-9a-f-]{1,36}$"
WebhookId = Annotated[str, Path(pattern=ID, max_length=36, description="The endpoint's id.")]
DeliveryId = Annotated[str, Path(pattern=ID, max_length=36, description="The delivery's id.")]


def _with_etag(body: WebhookOut, etag: str, status: int = 200) -> JSONResponse:
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status,
        headers={"ETag": etag, "Location": presenters.webhook_location(body.id)},
    )


@router.post(
    "",
    status_code=201,
    operation_id="createWebhook",
    summary="Create a webhook endpoint",
    response_model=WebhookCreated,
    responses=problem_responses(
        *AUTH_ERRORS, *IDEMPOTENCY_ERRORS, service.UnsafeWebhookUrl, validation=True
    ),
)
async def create_webhook(
    body: WebhookCreate,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    idem: IdempotencyDep,
) -> JSONResponse:
    """A webhook (`url`) or a notification channel (`channel`, an apprise URL such as
    `slack://…` or `mailto://…`, with optional message `templates`). A webhook's response
    carries the signing secret once; a channel's URL is sealed and never shown again (the
    response masks it). The destination is checked now (scheme, allowed hosts, every
    address the names resolve to) and again at every delivery."""
    async with uow:
        await idem.claim(uow)
        endpoint, secret = await service.create(uow, context, principal, body)
        created = WebhookCreated(**presenters.webhook_out(endpoint).model_dump(), secret=secret)
        response = JSONResponse(
            created.model_dump(mode="json"),
            status_code=201,
            headers={
                "Location": presenters.webhook_location(endpoint.id),
                "ETag": service.etag(endpoint),
            },
        )
        await idem.complete(uow.session, response)
    return response


@router.get(
    "",
    operation_id="listWebhooks",
    summary="List webhook endpoints",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_webhooks(
    principal: Operator, session: SessionDep, page: CursorParamsDep
) -> WebhookList:
    rows, next_cursor = await service.list_endpoints(session, page)
    return WebhookList(items=[presenters.webhook_out(e) for e in rows], next_cursor=next_cursor)


@router.get(
    "/{webhook_id}",
    operation_id="getWebhook",
    summary="Get a webhook endpoint",
    response_model=WebhookOut,
    responses=problem_responses(*AUTH_ERRORS, service.WebhookNotFound, validation=True),
)
async def get_webhook(
    principal: Operator, session: SessionDep, webhook_id: WebhookId
) -> JSONResponse:
    endpoint = await service.get(session, webhook_id)
    return _with_etag(presenters.webhook_out(endpoint), service.etag(endpoint))


@router.patch(
    "/{webhook_id}",
    operation_id="updateWebhook",
    summary="Change a webhook endpoint",
    response_model=WebhookOut,
    responses=problem_responses(
        *AUTH_ERRORS,
        BadRequest,
        service.WebhookNotFound,
        PreconditionFailed,
        service.UnsafeWebhookUrl,
        validation=True,
    ),
)
async def update_webhook(
    body: WebhookUpdate,
    principal: Operator,
    context: ContextDep,
    uow: UnitOfWorkDep,
    webhook_id: WebhookId,
    if_match: IfMatch = None,
) -> JSONResponse:
    """`enabled: false` stops deliveries (pending ones are cancelled); `enabled: true`
    re-enables an endpoint that was disabled. `If-Match` refuses a stale write (412).
    A channel takes a new `channel` URL and `templates`; a webhook `url` and `headers`."""
    async with uow:
        endpoint = await service.update_endpoint(
            uow, context, principal, webhook_id, body, if_match
        )
        out = presenters.webhook_out(endpoint)
        tag = service.etag(endpoint)
    return _with_etag(out, tag)


@router.delete(
    "/{webhook_id}",
    status_code=204,
    operation_id="deleteWebhook",
    summary="Delete a webhook endpoint",
    responses=problem_responses(*AUTH_ERRORS, service.WebhookNotFound, validation=True),
)
async def delete_webhook(
    principal: Operator, uow: UnitOfWorkDep, webhook_id: WebhookId
) -> Response:
    """Deletes the endpoint and its delivery log; nothing more is sent to it."""
    async with uow:
        await service.delete(uow, principal, webhook_id)
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/rotate-secret",
    operation_id="rotateWebhookSecret",
    summary="Rotate the signing secret",
    responses=problem_responses(
        *AUTH_ERRORS, service.WebhookNotFound, service.NotAWebhook, validation=True
    ),
)
async def rotate_secret(
    principal: Operator, context: ContextDep, uow: UnitOfWorkDep, webhook_id: WebhookId
) -> SecretRotated:
    """A new secret, shown once. Until `previous_secret_expires_at` every attempt carries
    two signatures (new and previous), so a receiver holding either verifies."""
    async with uow:
        endpoint, secret = await service.rotate_secret(uow, context, principal, webhook_id)
        expires = endpoint.previous_secret_expires_at
    assert expires is not None
    return SecretRotated(secret=secret, previous_secret_expires_at=expires)


@router.post(
    "/{webhook_id}/test",
    operation_id="testWebhook",
    summary="Send a test event",
    responses=problem_responses(*AUTH_ERRORS, service.WebhookNotFound, validation=True),
)
async def test_webhook(
    principal: Operator, context: ContextDep, webhook_id: WebhookId
) -> TestResult:
    """Sends a `webhook.test` event to this endpoint now (even a disabled one) and answers
    with the attempt: status code (none for a channel), latency, response excerpt or
    error. Not retried."""
    delivery, attempt = await webhook_delivery.send_test(context, principal, webhook_id)
    return TestResult(
        delivery=presenters.delivery_out(delivery), attempt=presenters.attempt_out(attempt)
    )


@router.get(
    "/{webhook_id}/deliveries",
    operation_id="listWebhookDeliveries",
    summary="List an endpoint's deliveries",
    responses=problem_responses(*AUTH_ERRORS, service.WebhookNotFound, validation=True),
)
async def list_deliveries(
    principal: Operator,
    session: SessionDep,
    page: CursorParamsDep,
    webhook_id: WebhookId,
    status: Annotated[DeliveryStatus | None, Query(description="Only this state.")] = None,
    event_type: Annotated[
        str | None,
        Query(max_length=100, pattern=EVENT_TYPE, description="Only this event type."),
    ] = None,
) -> DeliveryList:
    """Newest first; keyset pagination (`cursor` = the previous page's `next_cursor`)."""
    rows, next_cursor = await service.list_deliveries(
        session, webhook_id, page, status=status, event_type=event_type
    )
    return DeliveryList(items=[presenters.delivery_out(d) for d in rows], next_cursor=next_cursor)


@deliveries_router.get(
    "/{delivery_id}",
    operation_id="getWebhookDelivery",
    summary="Get a delivery with its attempts",
    responses=problem_responses(*AUTH_ERRORS, service.DeliveryNotFound, validation=True),
)
async def get_delivery(
    principal: Operator, session: SessionDep, delivery_id: DeliveryId
) -> DeliveryDetail:
    delivery, event, attempts = await service.get_delivery(session, delivery_id)
    endpoint = await service.get(session, delivery.endpoint_id)
    return presenters.delivery_detail(delivery, endpoint, event, list(attempts))


@deliveries_router.post(
    "/{delivery_id}/redeliver",
    status_code=202,
    operation_id="redeliverWebhook",
    summary="Redeliver",
    responses=problem_responses(
        *AUTH_ERRORS,
        service.DeliveryNotFound,
        service.EndpointDisabled,
        service.DeliveryInProgress,
        validation=True,
    ),
)
async def redeliver(
    principal: Operator, uow: UnitOfWorkDep, delivery_id: DeliveryId
) -> DeliveryOut:
    """Queues the delivery again now, with the same `webhook-id` (receivers dedupe by it)
    and a new timestamp and signature, and a fresh retry schedule."""
    async with uow:
        delivery = await service.redeliver(uow, principal, delivery_id)
        out = presenters.delivery_out(delivery)
    return out
