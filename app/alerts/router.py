"""``POST /v1/alerts/alertmanager``: Prometheus Alertmanager's webhook receiver.

Configure it as a ``webhook_config`` with ``send_resolved: true`` and a bearer token
limited to alerts (``POST /v1/tokens`` with ``"scope": "alerts"``; an operator's token
works too). Alertmanager retries a notification answered 5xx and drops one answered
4xx, so the receiver answers 200 for every notification it understood (re-sent ones
included: they are deduplicated, not refused), 4xx for one it cannot read, and 5xx only
when the database is unavailable. No ``Idempotency-Key``: Alertmanager sends none, and
its groupKey and fingerprints make a re-send harmless.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.exc import IntegrityError

from app.alerts import service
from app.alerts.schemas import AlertmanagerNotification, AlertReceipt
from app.audit.service import AuditUnavailable
from app.auth.deps import AlertSender
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.core.deps import ContextDep, UnitOfWorkDep
from app.core.errors import (
    BadRequest,
    ConcurrentChange,
    PayloadTooLarge,
    ServiceUnavailable,
    is_unique_violation,
    problem_responses,
)
from app.core.paths import V1

router = APIRouter(prefix=f"{V1}/alerts", tags=["alerts"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)


class ReceiverBusy(ServiceUnavailable):
    """A concurrent change kept the notification from applying: nothing was written, and
    Alertmanager retries a 5xx (a 409 it would drop)."""

    type = "/problems/alerts-busy"
    title = "Concurrent change; retry the notification"


async def _check_size(request: Request, context: ContextDep) -> None:
    """413 above the receiver's own limit (checked before the body is validated)."""
    limit = context.settings.alerts.max_body_bytes
    declared = request.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    if too_large or len(await request.body()) > limit:
        raise PayloadTooLarge(f"An alert notification is at most {limit} bytes")


@router.post(
    "/alertmanager",
    operation_id="receiveAlertmanagerNotification",
    summary="Receive an Alertmanager notification",
    dependencies=[Depends(_check_size)],
    responses=problem_responses(
        BadRequest,
        *AUTH_ERRORS,
        PayloadTooLarge,
        ServiceUnavailable,
        ReceiverBusy,
        AuditUnavailable,
        validation=True,
    ),
)
async def receive_alertmanager(
    body: AlertmanagerNotification,
    principal: AlertSender,
    context: ContextDep,
    uow: UnitOfWorkDep,
) -> AlertReceipt:
    """Alertmanager's webhook payload (version 4) as it sends it; fields it does not
    know are ignored. Each alert is kept once per group and fingerprint (a re-send
    counts, never duplicates). Firing alerts open or update the group's incident —
    severity from the matching threshold, else the `severity` label; components from the
    `component` label or the `service`/`environment` labels — unless a maintenance window
    in progress covers their components (recorded as suppressed). A notification whose
    alerts are all resolved moves the incident to `monitoring` and restores its
    components. One audit record per notification (`alert.receive`)."""
    try:
        async with uow:
            return await service.receive(uow, context, principal, body)
    except (ConcurrentChange, IntegrityError) as exc:
        if isinstance(exc, IntegrityError) and not is_unique_violation(exc):
            raise
        raise ReceiverBusy(
            "A concurrent change to the same incident or alerts came first; nothing was "
            "changed. Send the notification again.",
            headers={"Retry-After": "1"},
        ) from None
