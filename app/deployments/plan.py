"""A deployment's plan — the runbook's Change Management as steps — and how its steps
sum up into a GitHub-style deployment status.

main:     checklist gate → backup (when the environment has a database) → pull each
          service → deploy each in deploy order (with its settle time) → verify each →
          smoke tests → post-deployment checks (health, then the error rate and p95
          latency over the settle window against the thresholds:
          :mod:`app.deployments.verification`)
rollback: each service back to its last successful version, in reverse order; run when
          a main step fails after the first change (``auto_rollback``) or when the
          deployment is cancelled; a service this deployment did not touch is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.deployments.verification import window_of
from app.environments.models import Environment, Service
from app.runs.kinds import Ending, Summary
from app.runs.models import Phase, Run, RunStatus, Step, StepStatus
from app.runs.service import StepSpec

PULL_TIMEOUT = 900.0
PROBE_TIMEOUT = 120.0


@dataclass(frozen=True)
class PlannedTarget:
    service: Service
    version: str


def service_params(service: Service) -> dict[str, Any]:
    return {
        "environment": service.environment,
        "name": service.name,
        "driver": service.driver,
        "config": service.config,
        "health_url": service.health_url,
        "health_timeout_seconds": service.health_timeout_seconds,
    }


def _deploy_timeout(service: Service) -> float:
    return 120.0 + service.health_timeout_seconds + service.settle_seconds


def plan(
    environment: Environment,
    targets: list[PlannedTarget],
    *,
    checklist: list[str],
    backup: bool,
    rollback_of: str | None = None,
) -> list[StepSpec]:
    ordered = sorted(targets, key=lambda t: (t.service.deploy_order, t.service.name))
    steps: list[StepSpec] = []
    if rollback_of is None:
        steps.append(
            StepSpec(
                "checklist",
                "checklist",
                {
                    "environment": environment.name,
                    "targets": [{"service": t.service.name, "version": t.version} for t in ordered],
                    "answers": checklist,
                    "required": list(environment.required_checklist),
                },
                timeout_seconds=30,
            )
        )
    if backup and environment.database:
        steps.append(
            StepSpec(
                f"backup {environment.database}",
                "backup_database",
                {"environment": environment.name, "database": environment.database},
            )
        )
    params: dict[str, Any]
    for t in ordered:
        params = {"service": service_params(t.service), "version": t.version}
        steps.append(
            StepSpec(f"pull {t.service.name}", "pull", params, timeout_seconds=PULL_TIMEOUT)
        )
    for t in ordered:
        params = {
            "service": service_params(t.service),
            "version": t.version,
            "settle_seconds": t.service.settle_seconds,
        }
        steps.append(
            StepSpec(
                f"deploy {t.service.name}",
                "deploy",
                params,
                timeout_seconds=_deploy_timeout(t.service),
            )
        )
    for t in ordered:
        params = {"service": service_params(t.service), "version": t.version}
        steps.append(
            StepSpec(f"verify {t.service.name}", "verify", params, timeout_seconds=PROBE_TIMEOUT)
        )
    for t in ordered:
        steps += _smoke_steps(t.service)
    for t in ordered:
        window = window_of(t.service.settle_seconds)
        params = {
            "service": service_params(t.service),
            "version": t.version,
            "post_deploy": True,
            "prometheus_url": environment.prometheus_url,
            "metrics_url": t.service.metrics_url,
            "window_seconds": window,
        }
        steps.append(
            StepSpec(
                f"post-deploy {t.service.name}",
                "verify",
                params,
                timeout_seconds=PROBE_TIMEOUT + window,
            )
        )
    if rollback_of is None:
        for t in reversed(ordered):
            steps.append(
                StepSpec(
                    f"rollback {t.service.name}",
                    "rollback_service",
                    {"service": service_params(t.service), "failed_version": t.version},
                    timeout_seconds=_deploy_timeout(t.service),
                    phase=Phase.ROLLBACK,
                )
            )
    return steps


def _smoke_steps(service: Service) -> list[StepSpec]:
    steps = []
    for test in service.smoke_tests:
        name = f"smoke {service.name}: {test['name']}"
        timeout = float(test.get("timeout_seconds", 30))
        if test["type"] == "http":
            params = {
                "method": test.get("method", "GET"),
                "url": test["url"],
                "headers": test.get("headers", {}),
                "expect_status": test.get("expect_status", [200]),
                "timeout_seconds": timeout,
            }
            steps.append(StepSpec(name, "http", params, timeout_seconds=timeout + 5))
        else:
            params = {"argv": test["argv"], "timeout_seconds": timeout, "env": test.get("env", {})}
            steps.append(StepSpec(name, "shell", params, True, timeout_seconds=timeout + 5))
    return steps


# -- outcome ---------------------------------------------------------------------------
# (the titles of its problems: app.deployments.problems)


def _cause(step: Step) -> tuple[str, str]:
    result = step.result or {}
    if result.get("interrupted"):
        problem = "interrupted"
    elif result.get("timeout"):
        problem = "timeout"
    elif step.name.startswith("smoke "):
        problem = "smoke-test-failed"
    else:
        problem = str(result.get("problem") or "step-failed")
    return f"/problems/{problem}", f"{step.name}: {step.error or 'failed'}"


def finalize(steps: list[Step], ending: Ending) -> Summary:
    rollback = [s for s in steps if s.phase == Phase.ROLLBACK]
    rolled_back = [
        s.name.removeprefix("rollback ") for s in rollback if s.status == StepStatus.SUCCESS
    ]
    rollback_failed = [s for s in rollback if s.status == StepStatus.FAILURE]
    result: dict[str, Any] = {"rolled_back": rolled_back}
    if ending.stopped_at is None and not ending.cancelled:
        failed = [s for s in steps if s.status == StepStatus.FAILURE and s.phase == Phase.MAIN]
        if failed:  # a step that does not stop the run failed
            problem, detail = _cause(failed[0])
            return RunStatus.FAILURE, problem, detail, result
        return RunStatus.SUCCESS, None, None, result
    if ending.cancelled:
        problem, detail = "/problems/cancelled", "cancelled while running"
    else:
        assert ending.stopped_at is not None
        problem, detail = _cause(ending.stopped_at)
    result["cause"] = {"type": problem, "detail": detail}
    if rollback_failed:
        errors = "; ".join(f"{s.name}: {s.error}" for s in rollback_failed)
        return RunStatus.ERROR, problem, f"{detail}; the rollback failed too: {errors}", result
    if ending.cancelled:
        suffix = f"; rolled back: {', '.join(rolled_back)}" if rolled_back else ""
        return RunStatus.CANCELLED, problem, detail + suffix, result
    if rolled_back:
        return (
            RunStatus.ROLLED_BACK,
            problem,
            f"{detail}; rolled back: {', '.join(rolled_back)}",
            result,
        )
    return RunStatus.FAILURE, problem, detail, result


def compensate(run: Run, ending: Ending) -> bool:
    return ending.cancelled or bool(run.params.get("auto_rollback", True))
