"""The daily health check's levels, read from the thresholds table (``/v1/thresholds``):
a service's response time (``latency_p95``), disk usage (``disk``), memory usage
(``memory``) and the age of the newest backup and verified backup (``backup_age``,
``backup_verified_age``). A threshold missing from the table has the runbook's numbers
(:data:`app.thresholds.defaults.RUNBOOK`). The plan passes the levels to the probes as
step parameters, so a probe run with parameters of its own keeps them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.thresholds.defaults import RUNBOOK
from app.thresholds.models import Threshold

LATENCY = "latency_p95"
DISK = "disk"
MEMORY = "memory"
BACKUP_AGE = "backup_age"
BACKUP_VERIFIED_AGE = "backup_verified_age"
PROBED = (LATENCY, DISK, MEMORY, BACKUP_AGE, BACKUP_VERIFIED_AGE)


@dataclass(frozen=True)
class Levels:
    """Above ``warning`` a warning, above ``critical`` critical; None: no such level."""

    warning: float | None
    critical: float | None


_DEFAULTS: dict[str, Levels] = {
    row["name"]: Levels(row["warning"], row["critical"]) for row in RUNBOOK
}


def levels(thresholds: Mapping[str, Threshold]) -> dict[str, Levels]:
    """The levels of every probed quantity, from ``thresholds`` (by name)."""
    found = {
        name: Levels(t.warning, t.critical) for name, t in thresholds.items() if name in PROBED
    }
    return {name: found.get(name, _DEFAULTS[name]) for name in PROBED}


DEFAULT_LEVELS: dict[str, Levels] = levels({})
