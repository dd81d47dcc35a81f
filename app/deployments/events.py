"""The events of deployments (and rollbacks, which are deployments too): queued, started,
and how they ended. Every one carries the same fields: the run's, the services and
versions it deploys, the ref, and links to the deployment and its run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.paths import V1
from app.deployments.models import DeploymentTarget
from app.outbox.catalog import EventType
from app.runs.events import RunEventData, RunResourceLinks
from app.runs.models import RunKind


class DeploymentEventService(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str = Field(description="The version this deployment brings.")


class DeploymentEventData(RunEventData):
    links: RunResourceLinks
    kind: Literal["deployment", "rollback"]
    environment: str
    services: list[DeploymentEventService] = Field(description="In deployment order.")
    ref: str | None = Field(description="Commit SHA, tag or branch, as requested.")


def links(deployment_id: str) -> dict[str, str]:
    return {"self": f"{V1}/deployments/{deployment_id}", "run": f"{V1}/runs/{deployment_id}"}


def services(targets: Iterable[DeploymentTarget]) -> list[dict[str, str]]:
    return [{"name": t.service, "version": t.version} for t in targets]


def data(
    deployment_id: str,
    kind: str,
    environment: str | None,
    status: str,
    targets: Iterable[DeploymentTarget],
    ref: str | None,
) -> dict[str, Any]:
    """The data of ``deployment.queued`` and ``deployment.started`` (the end's comes from
    the run's announcement and :func:`ended`)."""
    return {
        "id": deployment_id,
        "kind": kind,
        "environment": environment,
        "status": status,
        "failure_type": None,
        "services": services(targets),
        "ref": ref,
        "links": links(deployment_id),
    }


def ended(
    deployment_id: str, targets: Iterable[DeploymentTarget], ref: str | None
) -> dict[str, Any]:
    """What a deployment's end adds to its run's announcement."""
    return {"services": services(targets), "ref": ref, "links": links(deployment_id)}


_ID = "0193c6e8-7a1b-7c3e-9f10-2b4d5e6f7a8b"


def _example(status: str, failure_type: str | None = None) -> dict[str, Any]:
    return {
        "id": _ID,
        "kind": RunKind.DEPLOYMENT.value,
        "environment": "production",
        "status": status,
        "failure_type": failure_type,
        "services": [{"name": "backend", "version": "1.4.2"}],
        "ref": "9f1c2ab",
        "links": links(_ID),
    }


TYPES = (
    EventType(
        "deployment.queued",
        "A deployment or rollback was requested; it waits for its turn and a worker.",
        DeploymentEventData,
        _example("queued"),
    ),
    EventType(
        "deployment.started",
        "A worker started a deployment or rollback (no earlier one holds its services).",
        DeploymentEventData,
        _example("in_progress"),
    ),
    EventType(
        "deployment.succeeded",
        "A deployment or rollback succeeded: every service runs its new version, healthy.",
        DeploymentEventData,
        _example("success"),
    ),
    EventType(
        "deployment.failed",
        "A deployment or rollback failed and was not rolled back (`error`: the rollback "
        "failed too).",
        DeploymentEventData,
        _example("failure", "/problems/step-failed"),
    ),
    EventType(
        "deployment.rolled_back",
        "A deployment failed and was rolled back automatically; the failed versions are pinned.",
        DeploymentEventData,
        _example("rolled_back", "/problems/health-check-failed"),
    ),
    EventType(
        "deployment.cancelled",
        "A deployment or rollback was cancelled (a running one is rolled back).",
        DeploymentEventData,
        _example("cancelled", "/problems/cancelled"),
    ),
)
