"""Webhook endpoints: create (secret shown once), change, delete, rotate the secret,
disable; and the delivery log: list, read, redeliver. Every change is audited in its
transaction."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.audit.service import Actor
from app.auth.principal import Principal
from app.core.context import AppContext
from app.core.db import UnitOfWork, utcnow
from app.core.errors import AppError, NotFound, PreconditionFailed, ValidationFailed
from app.core.ids import new_id
from app.core.pagination import CursorParams, paginate
from app.core.registry import Catalog
from app.core.sealing import Sealer, sealer_for
from app.outbox.catalog import EVENT_TYPES, EventType, validate_pattern
from app.outbox.models import OutboxEvent
from app.outbox.service import add_event
from app.webhooks import channels, signing
from app.webhooks.guard import UnsafeDestination
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.webhooks.schemas import WebhookCreate, WebhookUpdate
from app.webhooks.sender import SENDER

SECRETS_PURPOSE = "webhook-secrets"


class WebhookNotFound(NotFound):
    type = "/problems/webhook-not-found"
    title = "Webhook endpoint not found"


class DeliveryNotFound(NotFound):
    type = "/problems/webhook-delivery-not-found"
    title = "Webhook delivery not found"


class UnsafeWebhookUrl(ValidationFailed):
    type = "/problems/unsafe-destination"
    title = "Destination refused"


class EndpointDisabled(AppError):
    type = "/problems/webhook-endpoint-disabled"
    title = "Webhook endpoint disabled"
    status = 409


class DeliveryInProgress(AppError):
    type = "/problems/webhook-delivery-in-progress"
    title = "Delivery in progress"
    status = 409


class NotAWebhook(AppError):
    type = "/problems/not-a-webhook"
    title = "A notification channel has no signing secret"
    status = 409


def sealer(context: AppContext) -> Sealer:
    return sealer_for(context.secret_key, SECRETS_PURPOSE)


def etag(endpoint: WebhookEndpoint) -> str:
    return f'"{endpoint.id}.{endpoint.version}"'


def signing_secrets(context: AppContext, endpoint: WebhookEndpoint, now: dt.datetime) -> list[str]:
    """The secrets that sign an attempt now: the current one, and the previous one while
    its rotation overlap lasts."""
    seal = sealer(context)
    found = [seal.open(endpoint.secret_sealed)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_sealed and expires is not None and expires > now:
        found.append(seal.open(endpoint.previous_secret_sealed))
    return found


def custom_headers(context: AppContext, endpoint: WebhookEndpoint) -> dict[str, str]:
    if not endpoint.headers_sealed:
        return {}
    value: dict[str, str] = json.loads(sealer(context).open(endpoint.headers_sealed))
    return value


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


def _field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        message, errors=[{"loc": ["body", field], "msg": message, "type": "value_error"}]
    )


def _check_event_types(catalog: Catalog[EventType], patterns: Sequence[str]) -> None:
    for pattern in patterns:
        try:
            validate_pattern(pattern, catalog)
        except ValueError as exc:
            raise _field_error("event_types", str(exc)) from None


async def check_destination(context: AppContext, url: str) -> None:
    """The creation-time check: syntax and scheme, then every address the name resolves to
    (checked again at every delivery: a name may change its addresses)."""
    try:
        await context.resources[SENDER].check(url)
    except UnsafeDestination as exc:
        raise UnsafeWebhookUrl(
            f"The destination is refused: {exc}",
            errors=[{"loc": ["body", "url"], "msg": str(exc), "type": f"unsafe_{exc.reason}"}],
        ) from None


async def check_channel(context: AppContext, url: str, field: str = "channel") -> str:
    """A channel URL's creation-time check: an accepted scheme, a URL apprise takes, and
    every host it will contact allowed (checked again at every delivery). Returns the
    service's name. Errors never quote the URL."""
    settings = context.settings.webhooks
    try:
        service, plugin = channels.instantiate(url, settings)
        await channels.check_hosts(service, plugin, settings, context.resources[SENDER].guard)
    except channels.ChannelRefused as exc:
        raise _field_error(field, str(exc)) from None
    except UnsafeDestination as exc:
        raise UnsafeWebhookUrl(
            f"The channel is refused: {exc}",
            errors=[{"loc": ["body", field], "msg": str(exc), "type": f"unsafe_{exc.reason}"}],
        ) from None
    return service.name


def channel_url(context: AppContext, endpoint: WebhookEndpoint) -> str:
    """A channel's apprise URL in clear (Unsealable if the server secret changed)."""
    return sealer(context).open(endpoint.channel_sealed or "")


def audit_url(url: str) -> str:
    """The destination as the audit trail keeps it: its origin only. A path often carries
    the receiver's own secret (`https://hooks.slack.com/services/T/B/<secret>`), and the
    audit trail is read by viewers; operators read the whole URL on the endpoint."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    tail = "/..." if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{tail}"


def _audit_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "kind": endpoint.kind,
        "url": audit_url(endpoint.url or "") if endpoint.kind == "webhook" else endpoint.url,
        "event_types": endpoint.event_types,
        "format": endpoint.format,
        "enabled": endpoint.enabled,
        "header_names": endpoint.header_names,
    }


async def create(
    uow: UnitOfWork, context: AppContext, principal: Principal, body: WebhookCreate
) -> tuple[WebhookEndpoint, str | None]:
    """A new endpoint and its secret (returned once, stored sealed); a channel: its URL
    sealed, no secret returned."""
    _check_event_types(context.registry[EVENT_TYPES], body.event_types)
    seal = sealer(context)
    service: str | None = None
    if body.channel is not None:
        _check_event_types_of_templates(context, body.templates or {})
        service = await check_channel(context, body.channel)
    else:
        assert body.url is not None
        await check_destination(context, body.url)
    secret = signing.new_secret()
    now = utcnow()
    endpoint = WebhookEndpoint(
        id=new_id(),
        kind="webhook" if body.channel is None else "channel",
        url=body.url if body.channel is None else channels.masked(body.channel),
        channel_sealed=seal.seal(body.channel) if body.channel is not None else None,
        channel_service=service,
        description=body.description,
        event_types=body.event_types,
        format=body.format,
        enabled=body.enabled,
        disabled_reason=None if body.enabled else "manual",
        disabled_at=None if body.enabled else now,
        secret_sealed=seal.seal(secret),
        headers_sealed=seal.seal(json.dumps(body.headers)) if body.headers else None,
        header_names=sorted(body.headers),
        created_by=principal.actor,
        created_at=now,
        updated_at=now,
        version=1,
        templates=body.templates or {},
    )
    uow.session.add(endpoint)
    await uow.session.flush()
    await audit_service.record(
        uow.session,
        principal,
        action="webhook.create",
        resource_type="webhook",
        resource_id=endpoint.id,
        summary=_audit_view(endpoint),
    )
    return endpoint, secret if endpoint.kind == "webhook" else None


def _check_event_types_of_templates(context: AppContext, templates: dict[str, str]) -> None:
    for pattern in templates:
        try:
            validate_pattern(pattern, context.registry[EVENT_TYPES])
        except ValueError as exc:
            raise _field_error("templates", str(exc)) from None


async def get(session: AsyncSession, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id) if len(endpoint_id) <= 36 else None
    if endpoint is None:
        raise WebhookNotFound(f"No webhook endpoint {endpoint_id!r}")
    return endpoint


async def _locked(session: AsyncSession, endpoint_id: str) -> WebhookEndpoint:
    endpoint = (
        await session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if endpoint is None or len(endpoint_id) > 36:
        raise WebhookNotFound(f"No webhook endpoint {endpoint_id!r}")
    return endpoint


def _check_match(endpoint: WebhookEndpoint, if_match: str | None) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    tags = [tag.strip().removeprefix("W/") for tag in if_match.split(",")]
    if etag(endpoint) not in tags:
        raise PreconditionFailed("The endpoint changed since it was read; read it again and retry")


async def update_endpoint(
    uow: UnitOfWork,
    context: AppContext,
    principal: Principal,
    endpoint_id: str,
    body: WebhookUpdate,
    if_match: str | None,
) -> WebhookEndpoint:
    endpoint = await _locked(uow.session, endpoint_id)
    _check_match(endpoint, if_match)
    changes = body.model_dump(exclude_unset=True)
    if body.event_types is not None:
        _check_event_types(context.registry[EVENT_TYPES], body.event_types)
    if endpoint.kind == "webhook":
        for name in ("channel", "templates"):
            if name in changes:
                raise _field_error(name, f"`{name}` applies to channels, not to webhooks")
    else:
        for name in ("url", "headers"):
            if name in changes:
                raise _field_error(name, f"`{name}` applies to webhooks, not to channels")
        if body.format not in (None, "standard"):
            raise _field_error("format", "a channel sends messages: `format` must be `standard`")
    if body.url is not None and endpoint.kind == "webhook":
        await check_destination(context, body.url)
        if (
            endpoint.header_names
            and body.headers is None
            and _origin(body.url) != _origin(endpoint.url or "")
        ):
            # The sealed header values were given for the old receiver; moving them to
            # another host unasked would hand them to whoever runs it.
            raise _field_error(
                "headers",
                "the destination moves to another host: give `headers` again (or `{}`) "
                "with the new `url`",
            )
        endpoint.url = body.url
    if body.channel is not None and endpoint.kind == "channel":
        endpoint.channel_service = await check_channel(context, body.channel)
        endpoint.channel_sealed = sealer(context).seal(body.channel)
        endpoint.url = channels.masked(body.channel)
    if body.templates is not None and endpoint.kind == "channel":
        _check_event_types_of_templates(context, body.templates)
        endpoint.templates = body.templates
    if body.event_types is not None:
        endpoint.event_types = body.event_types
    if body.description is not None:
        endpoint.description = body.description
    if body.format is not None:
        endpoint.format = body.format
    if body.headers is not None:
        endpoint.headers_sealed = (
            sealer(context).seal(json.dumps(body.headers)) if body.headers else None
        )
        endpoint.header_names = sorted(body.headers)
    now = utcnow()
    if body.enabled is True and not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.disabled_at = None
        endpoint.failing_since = None
    elif body.enabled is False and endpoint.enabled:
        endpoint.enabled = False
        endpoint.disabled_reason = "manual"
        endpoint.disabled_at = now
        await _cancel_pending(uow.session, endpoint.id, "endpoint disabled")
    endpoint.updated_at = now
    endpoint.version += 1
    await uow.session.flush()
    await audit_service.record(
        uow.session,
        principal,
        action="webhook.update",
        resource_type="webhook",
        resource_id=endpoint.id,
        summary={"changed": sorted(changes), **_audit_view(endpoint)},
    )
    return endpoint


async def delete(uow: UnitOfWork, principal: Principal, endpoint_id: str) -> None:
    """Delete an endpoint with its delivery log; nothing more is sent to it."""
    endpoint = await _locked(uow.session, endpoint_id)
    view = _audit_view(endpoint)
    await uow.session.delete(endpoint)
    await uow.session.flush()
    await audit_service.record(
        uow.session,
        principal,
        action="webhook.delete",
        resource_type="webhook",
        resource_id=endpoint_id,
        summary=view,
    )


async def rotate_secret(
    uow: UnitOfWork, context: AppContext, principal: Principal, endpoint_id: str
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the current one keeps signing beside it for the overlap (24 h by
    default), so receivers can switch at their pace. A second rotation within the overlap
    replaces the oldest. A notification channel signs nothing: refused."""
    endpoint = await _locked(uow.session, endpoint_id)
    if endpoint.kind != "webhook":
        raise NotAWebhook("This endpoint is a notification channel; its messages are not signed")
    secret = signing.new_secret()
    now = utcnow()
    endpoint.previous_secret_sealed = endpoint.secret_sealed
    endpoint.previous_secret_expires_at = now + dt.timedelta(
        seconds=context.settings.webhooks.rotation_overlap_seconds
    )
    endpoint.secret_sealed = sealer(context).seal(secret)
    endpoint.updated_at = now
    endpoint.version += 1
    await uow.session.flush()
    await audit_service.record(
        uow.session,
        principal,
        action="webhook.rotate_secret",
        resource_type="webhook",
        resource_id=endpoint.id,
        summary={"previous_secret_expires_at": endpoint.previous_secret_expires_at.isoformat()},
    )
    return endpoint, secret


async def _cancel_pending(session: AsyncSession, endpoint_id: str, reason: str) -> None:
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .values(
            status="cancelled",
            next_attempt_at=None,
            lease_token=None,
            lease_until=None,
            last_error=reason,
        )
    )


async def disable(
    session: AsyncSession, actor: Actor, endpoint: WebhookEndpoint, reason: str, detail: str
) -> None:
    """Disable ``endpoint`` (410 Gone, or failing too long), in the caller's transaction:
    its pending deliveries are cancelled, an audit row and a
    ``webhook_endpoint.disabled`` event are written."""
    now = utcnow()
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.disabled_at = now
    endpoint.updated_at = now
    endpoint.version += 1
    await session.flush()
    await _cancel_pending(session, endpoint.id, "endpoint disabled")
    await audit_service.record(
        session,
        actor,
        action="webhook.disable",
        resource_type="webhook",
        resource_id=endpoint.id,
        summary={"reason": reason, "detail": detail, "url": _audit_view(endpoint)["url"]},
    )
    await add_event(
        session,
        "webhook_endpoint.disabled",
        {
            "id": endpoint.id,
            "reason": reason,
            "detail": detail,
            "failing_since": endpoint.failing_since.isoformat() if endpoint.failing_since else None,
            "links": {"self": f"/v1/webhooks/{endpoint.id}"},
        },
    )


async def list_endpoints(
    session: AsyncSession, page: CursorParams
) -> tuple[Sequence[WebhookEndpoint], str | None]:
    return await paginate(
        session,
        select(WebhookEndpoint),
        page,
        created_at=WebhookEndpoint.created_at,
        id=WebhookEndpoint.id,
    )


async def list_deliveries(
    session: AsyncSession,
    endpoint_id: str,
    page: CursorParams,
    *,
    status: str | None,
    event_type: str | None,
) -> tuple[Sequence[WebhookDelivery], str | None]:
    await get(session, endpoint_id)
    statement = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    if event_type is not None:
        statement = statement.where(WebhookDelivery.event_type == event_type)
    return await paginate(
        session, statement, page, created_at=WebhookDelivery.created_at, id=WebhookDelivery.id
    )


async def get_delivery(
    session: AsyncSession, delivery_id: str
) -> tuple[WebhookDelivery, OutboxEvent | None, Sequence[WebhookAttempt]]:
    delivery = await session.get(WebhookDelivery, delivery_id) if len(delivery_id) <= 36 else None
    if delivery is None:
        raise DeliveryNotFound(f"No webhook delivery {delivery_id!r}")
    event = await session.get(OutboxEvent, delivery.event_id)
    attempts = (
        await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.number)
        )
    ).all()
    return delivery, event, attempts


async def redeliver(uow: UnitOfWork, principal: Principal, delivery_id: str) -> WebhookDelivery:
    """Send the delivery again now (same ``webhook-id``, new timestamp and signature), with
    a fresh retry schedule."""
    delivery = (
        await uow.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if delivery is None or len(delivery_id) > 36:
        raise DeliveryNotFound(f"No webhook delivery {delivery_id!r}")
    endpoint = await get(uow.session, delivery.endpoint_id)
    if not endpoint.enabled:
        raise EndpointDisabled(
            "The endpoint is disabled; enable it (PATCH enabled: true) before redelivering"
        )
    now = utcnow()
    if delivery.status == "pending" and delivery.lease_until and delivery.lease_until > now:
        raise DeliveryInProgress("An attempt of this delivery is under way; read it again soon")
    delivery.status = "pending"
    delivery.schedule_index = 0
    delivery.next_attempt_at = now
    delivery.lease_token = None
    delivery.lease_until = None
    await uow.session.flush()
    await audit_service.record(
        uow.session,
        principal,
        action="webhook_delivery.redeliver",
        resource_type="webhook_delivery",
        resource_id=delivery.id,
        summary={"endpoint_id": delivery.endpoint_id, "event_id": delivery.event_id},
    )
    return delivery
