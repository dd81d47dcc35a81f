"""The words of runs as plain values: kinds, statuses, phases, levels and the titles of
their failures. The tables (:mod:`app.runs.models`), the schemas and the command line
share them; importing this module loads neither the database layer nor pydantic (the
command line's client commands start without either)."""

from __future__ import annotations

import enum


class RunKind(enum.StrEnum):
    DEPLOYMENT = "deployment"
    ROLLBACK = "rollback"
    BACKUP = "backup"
    BACKUP_VERIFICATION = "backup_verification"
    RESTORE = "restore"
    HEALTH_CHECK = "health_check"
    MAINTENANCE = "maintenance"
    PLAYBOOK = "playbook"


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.SUCCESS,
        RunStatus.FAILURE,
        RunStatus.ERROR,
        RunStatus.CANCELLED,
        RunStatus.ROLLED_BACK,
    }
)


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class Phase(enum.StrEnum):
    """``main`` steps run in order; ``rollback`` steps undo them when the run's kind
    says so (a failed or cancelled deployment) and are skipped otherwise."""

    MAIN = "main"
    ROLLBACK = "rollback"


class Level(enum.StrEnum):
    """How a probe's measurement compares with the runbook's thresholds."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


FAILURE_TITLES = {
    "/problems/step-failed": "A step failed",
    "/problems/timeout": "A step timed out",
    "/problems/interrupted": "Interrupted",
    "/problems/cancelled": "Cancelled",
    "/problems/health-check-failed": "Health check failed",
    "/problems/unsupported-run-kind": "Unsupported run kind",
    "/problems/approval-rejected": "Rejected at an approval",
    "/problems/approval-timed-out": "No answer at an approval",
}
