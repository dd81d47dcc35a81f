"""Refused requests in the audit trail, from one place.

A state-changing request that passed authentication and was then refused — a conflict
(409, e.g. ``version-pinned``), a failed precondition (412) or invalid input (422) —
leaves one ``failed`` event named by the route's action, written in a transaction of
its own (the refused change rolled back). A request refused by authentication or
authorisation (401, 403, the first 429 of a failing address) leaves one ``auth.denied``
event, from the :class:`~app.auth.errors.Denial` its error carries. Every error handler
the application has is wrapped, so a route needs nothing of its own.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import WebSocketRequestValidationError
from starlette.responses import Response

from app.audit import service as audit_service
from app.audit.models import Outcome
from app.auth.errors import Denial
from app.auth.principal import Principal

REFUSED_STATUSES = frozenset({409, 412, 422})
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The audit action of each state-changing route (by operation id), as its successful
# change is recorded; ``tests/test_route_scopes.py`` holds every such route to an entry.
ACTIONS: dict[str, str] = {
    "createToken": "token.create",
    "revokeToken": "token.revoke",
    "cancelRun": "run.cancel",
    "approveRun": "run.approve",
    "rejectRun": "run.reject",
    "createHealthCheck": "health_check.create",
    "startRunbookRun": "runbook.run",
    "createEnvironment": "environment.create",
    "putEnvironment": "environment.put",
    "deleteEnvironment": "environment.delete",
    "putService": "service.put",
    "deleteService": "service.delete",
    "deletePin": "pin.delete",
    "createDeployment": "deployment.create",
    "cancelDeployment": "run.cancel",
    "createRestore": "restore.create",
    "rollbackDeployment": "rollback.create",
    "createWebhook": "webhook.create",
    "updateWebhook": "webhook.update",
    "deleteWebhook": "webhook.delete",
    "rotateWebhookSecret": "webhook.rotate_secret",
    "testWebhook": "webhook.test",
    "redeliverWebhook": "webhook_delivery.redeliver",
    "createComponent": "component.create",
    "updateComponent": "component.update",
    "deleteComponent": "component.delete",
    "updateThreshold": "threshold.update",
    "receiveAlertmanagerNotification": "alert.receive",
    "createIncident": "incident.create",
    "updateIncident": "incident.update",
    "addIncidentUpdate": "incident.add_update",
    "acknowledgeIncident": "incident.acknowledge",
    "resolveIncident": "incident.resolve",
    "putIncidentPostmortem": "incident.postmortem",
    "rollbackIncidentDeployment": "incident.rollback",
    "createMaintenance": "maintenance.create",
    "updateMaintenance": "maintenance.update",
    "createMaintenanceUpdate": "maintenance_update.create",
    "startMaintenance": "maintenance.start",
    "completeMaintenance": "maintenance.complete",
    "cancelMaintenance": "maintenance.cancel",
    "createBackup": "backup.create",
    "verifyBackup": "backup.verify",
    "deleteBackup": "backup.delete",
    "createSchedule": "schedule.create",
    "updateSchedule": "schedule.update",
    "deleteSchedule": "schedule.delete",
}

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]


def route_action(request: Request) -> str | None:
    """The audit action of the route ``request`` matched; None for reads."""
    if request.method not in STATE_CHANGING_METHODS:
        return None
    route = request.scope.get("route")
    operation = getattr(route, "operation_id", None) or getattr(route, "name", None)
    if operation is None:
        return None
    return ACTIONS.get(operation, str(operation))


def _problem(response: Response) -> dict[str, Any]:
    try:
        body = json.loads(bytes(response.body))
    except (AttributeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


async def audit_refusal(request: Request, response: Response) -> None:
    """Record ``response`` when it refuses an authenticated state change."""
    if response.status_code not in REFUSED_STATUSES:
        return
    principal = getattr(request.state, "principal", None)
    action = route_action(request)
    if not isinstance(principal, Principal) or action is None:
        return
    problem = _problem(response)
    summary: dict[str, Any] = {
        "status": response.status_code,
        "type": problem.get("type"),
        "detail": problem.get("detail"),
        "method": request.method,
        "path": request.url.path,
    }
    errors = problem.get("errors")
    if isinstance(errors, list):  # where the input was wrong, never the input itself
        summary["errors"] = [e.get("loc") for e in errors if isinstance(e, dict)]
    params = request.path_params
    await audit_service.record_apart(
        request.app.state.context.unit_of_work,
        principal,
        action=action,
        outcome=Outcome.FAILED,
        resource_type=action.split(".")[0],
        resource_id="/".join(str(v) for v in params.values()) or None,
        summary=summary,
        client_address=principal.client_address,
        request_id=principal.request_id,
    )


async def audit_denial(request: Request, exc: Exception, response: Response) -> None:
    """Record the denial ``exc`` carries (:mod:`app.auth.errors`), with the status answered."""
    denial = getattr(exc, "denial", None)
    if not isinstance(denial, Denial):
        return
    await audit_service.record_denial(
        request.app.state.context.unit_of_work,
        denial.principal,
        reason=denial.reason,
        status=response.status_code,
        method=denial.method,
        path=denial.path,
        client_address=denial.client_address,
        request_id=denial.request_id,
    )


def _audited(handler: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        await audit_denial(request, exc, response)
        await audit_refusal(request, response)
        return response

    return handle


def install_refusal_audit(app: FastAPI) -> None:
    """Wrap the HTTP error handlers installed so far (call it after installing them)."""
    for key, handler in list(app.exception_handlers.items()):
        if isinstance(key, type) and issubclass(key, Exception):
            if issubclass(key, WebSocketRequestValidationError):
                continue
            app.add_exception_handler(key, _audited(cast(Handler, handler)))
