"""The titles of the problems a deployment ends with, as plain values: the plan's
finalizer and presenters, and the command line's client (without the run engine)."""

from __future__ import annotations

TITLES = {
    "/problems/checklist-incomplete": "Checklist incomplete",
    "/problems/version-pinned": "Version pinned",
    "/problems/pull-failed": "Pull failed",
    "/problems/deploy-failed": "Deploy failed",
    "/problems/health-check-failed": "Health check failed",
    "/problems/smoke-test-failed": "Smoke test failed",
    "/problems/post-deploy-check-failed": "Post-deployment check failed",
    "/problems/threshold-breached": "Threshold breached",
    "/problems/rollback-failed": "Rollback failed",
    "/problems/rolled-back": "Rolled back",
}
