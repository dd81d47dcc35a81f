"""The runbook's pre-deployment checklist ("Backup completed" is the backup step)."""

from __future__ import annotations

CHECKLIST_ITEMS: dict[str, str] = {
    "code_review": "Code review completed",
    "tests_passed": "Tests passing in CI/CD",
    "security_scan": "Security scan passed",
    "performance_tests": "Performance tests passed",
    "rollback_plan": "Rollback plan prepared",
    "stakeholders_notified": "Stakeholders notified",
}
