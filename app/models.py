"""Imports every table module so ``Base.metadata`` is complete (Alembic, tests)."""

from app.alerts.models import Alert
from app.audit.models import AuditChainHead, AuditEvent
from app.auth.models import ApiToken
from app.backups.models import Backup, Restore
from app.components.models import Component, ComponentStatusClaim, StatusRevision
from app.deployments.models import Deployment, DeploymentTarget
from app.environments.models import Environment, Pin, Service
from app.idempotency.models import IdempotencyRecord
from app.incidents.models import (
    Incident,
    IncidentClockEvent,
    IncidentComponent,
    IncidentUpdateRecord,
)
from app.maintenances.models import (
    Maintenance,
    MaintenanceComponent,
    MaintenanceEnvironment,
    MaintenanceUpdate,
)
from app.outbox.models import OutboxEvent
from app.runbooks.models import RunApproval
from app.runs.models import Run, RunEvent, Step
from app.schedules.models import Schedule, ScheduleDefault, ScheduleSlot
from app.thresholds.models import Threshold
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "Alert",
    "ApiToken",
    "AuditChainHead",
    "AuditEvent",
    "Backup",
    "Component",
    "ComponentStatusClaim",
    "Deployment",
    "DeploymentTarget",
    "Environment",
    "IdempotencyRecord",
    "Incident",
    "IncidentClockEvent",
    "IncidentComponent",
    "IncidentUpdateRecord",
    "Maintenance",
    "MaintenanceComponent",
    "MaintenanceEnvironment",
    "MaintenanceUpdate",
    "OutboxEvent",
    "Pin",
    "Restore",
    "Run",
    "RunApproval",
    "RunEvent",
    "Schedule",
    "ScheduleDefault",
    "ScheduleSlot",
    "Service",
    "StatusRevision",
    "Step",
    "Threshold",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
