"""Imports every table module so ``Base.metadata`` is complete (Alembic, tests)."""

from app.audit.models import AuditChainHead, AuditEvent
from app.auth.models import ApiToken
from app.deployments.models import Deployment, DeploymentTarget
from app.environments.models import Environment, Pin, Service
from app.idempotency.models import IdempotencyRecord
from app.outbox.models import OutboxEvent
from app.runs.models import Run, RunEvent, Step
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiToken",
    "AuditChainHead",
    "AuditEvent",
    "Deployment",
    "DeploymentTarget",
    "Environment",
    "IdempotencyRecord",
    "OutboxEvent",
    "Pin",
    "Run",
    "RunEvent",
    "Service",
    "Step",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
