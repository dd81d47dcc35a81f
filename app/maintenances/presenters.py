"""Maintenance windows as the API answers them."""

from __future__ import annotations

from app.core.paths import V1
from app.maintenances.models import Maintenance, MaintenanceUpdate
from app.maintenances.schemas import MaintenanceComponentOut, MaintenanceOut, UpdateOut
from app.maintenances.service import Details


def location(maintenance_id: str) -> str:
    return f"{V1}/maintenances/{maintenance_id}"


def update_out(update: MaintenanceUpdate) -> UpdateOut:
    return UpdateOut.model_validate(
        {
            "id": update.id,
            "status": update.status,
            "body": update.body,
            "created_by": update.created_by,
            "created_at": update.created_at,
        }
    )


def maintenance_out(window: Maintenance, details: Details) -> MaintenanceOut:
    return MaintenanceOut.model_validate(
        {
            "id": window.id,
            "title": window.title,
            "description": window.description,
            "status": window.status,
            "scheduled_for": window.scheduled_for,
            "scheduled_until": window.scheduled_until,
            "deploy_window": window.deploy_window,
            "auto_transition": window.auto_transition,
            "components": [
                MaintenanceComponentOut.model_validate(
                    {"id": c.id, "name": c.name, "status": c.status}
                )
                for c in details.components.get(window.id, [])
            ],
            "environments": details.environments.get(window.id, []),
            "started_at": window.started_at,
            "verifying_at": window.verifying_at,
            "completed_at": window.completed_at,
            "created_by": window.created_by,
            "created_at": window.created_at,
            "updated_at": window.updated_at,
            "updates": [update_out(u) for u in details.updates.get(window.id, [])],
        }
    )
