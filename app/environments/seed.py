"""The embedded default's ``local`` environment: a first deployment works on a fresh
machine. Its ``backend`` and ``frontend`` are the sample web service
(:mod:`app.sample_service`) run by the ``process`` driver; a version ending in
``-broken`` fails its health check, so a rollback can be tried too."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.audit import service as audit_service
from app.context import AppContext
from app.db import utcnow
from app.environments.models import Environment, Service

logger = logging.getLogger(__name__)

LOCAL = "local"


def _service(name: str, port: int, order: int) -> Service:
    now = utcnow()
    return Service(
        environment=LOCAL,
        name=name,
        driver="process",
        config={
            "command": ["{python}", "-m", "app.sample_service", "--name", name],
            "env": {},
            "cwd": None,
            "port": port,
            "stop_timeout_seconds": 10,
        },
        health_url=f"http://127.0.0.1:{port}/health",
        health_timeout_seconds=15,
        deploy_order=order,
        settle_seconds=1,
        smoke_tests=[
            {
                "name": "home page",
                "type": "http",
                "url": f"http://127.0.0.1:{port}/",
                "method": "GET",
                "expect_status": [200],
                "timeout_seconds": 10,
            }
        ],
        revision=1,
        created_at=now,
        updated_at=now,
    )


async def seed_local(context: AppContext) -> bool:
    """Create the ``local`` environment unless it exists; True when it was created."""
    settings = context.settings
    async with context.unit_of_work() as uow:
        if await uow.session.scalar(select(Environment.name).where(Environment.name == LOCAL)):
            return False
        now = utcnow()
        uow.session.add(
            Environment(
                name=LOCAL,
                description="This machine: the sample web service as backend and frontend.",
                database=None,
                required_checklist=[],
                revision=1,
                created_at=now,
                updated_at=now,
            )
        )
        await uow.session.flush()
        uow.session.add(_service("backend", settings.local_backend_port, 0))
        uow.session.add(_service("frontend", settings.local_frontend_port, 1))
        await uow.session.flush()
        await audit_service.record(
            uow.session,
            None,
            action="environment.seed",
            resource_type="environment",
            resource_id=LOCAL,
            summary={"services": ["backend", "frontend"]},
        )
    logger.info("seeded the local environment (backend and frontend, process driver)")
    return True
