"""The embedded default's ``local`` environment: a first deployment works on a fresh
machine; and the runbook's status page components, while there are none. The local
``backend`` and ``frontend`` are the sample web service
(:mod:`app.embedded.sample_service`) run by the ``process`` driver; a version ending in
``-broken`` fails its health check, so a rollback can be tried too.

``serve`` claims the two ports for as long as it runs (:class:`LocalPorts`): a port that
another program listens on, or that another ``serve`` claimed, is replaced by a free one,
and the environment points at the ports actually used. When it stops, ``serve`` stops
the processes it started (:func:`stop_process_services`)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit_service
from app.components import revision
from app.components.models import Component
from app.core.context import AppContext
from app.core.db import insert_rows, utcnow
from app.core.ids import new_id
from app.drivers.base import ServiceSpec
from app.drivers.pool import drivers
from app.environments.models import Environment, Service

logger = logging.getLogger(__name__)

LOCAL = "local"
SERVICES = ("backend", "frontend")
# The runbook's status page components: (name, description, the local services behind it).
COMPONENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Frontend", "The web application users open.", (f"{LOCAL}/frontend",)),
    ("Backend API", "The API the frontend and integrations call.", (f"{LOCAL}/backend",)),
    ("Database", "Where the product's data is stored.", ()),
    ("Cache", "Sessions and cached responses.", ()),
    ("File Storage", "Uploaded files and backups.", ()),
)
# Where every ``serve`` of this machine claims the ports of its sample services.
CLAIMS_DIR = Path(tempfile.gettempdir()) / "formula-ops-ports"


class LocalPorts:
    """The sample services' ports, each claimed with an exclusive ``flock`` held until
    :meth:`release`, so two ``serve`` on one machine never pick the same port."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self._claims: list[int] = []

    def claim(self, service: str, wanted: int) -> int:
        """``wanted`` if it is free and unclaimed, else a free port; the port claimed."""
        port = wanted
        while not self._try(port):
            port = _free_port()
        if port != wanted:
            logger.warning("port %s is taken: the local %s uses port %s", wanted, service, port)
        self.ports[service] = port
        return port

    def _try(self, port: int) -> bool:
        if port in self.ports.values():
            return False
        CLAIMS_DIR.mkdir(mode=0o1777, parents=True, exist_ok=True)
        fd = os.open(CLAIMS_DIR / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        if not _bindable(port):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return False
        self._claims.append(fd)
        return True

    def release(self) -> None:
        for fd in self._claims:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._claims.clear()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _point_at(service: Service, port: int) -> None:
    """Make ``service`` (the sample service) listen on, probe and smoke-test ``port``."""
    old = service.config.get("port")
    service.config = {**service.config, "port": port}
    service.health_url = f"http://127.0.0.1:{port}/health"
    service.smoke_tests = [
        {**test, "url": str(test.get("url", "")).replace(f":{old}/", f":{port}/")}
        for test in service.smoke_tests
    ]
    service.revision += 1
    service.updated_at = utcnow()


def _service(name: str, port: int, order: int) -> Service:
    now = utcnow()
    return Service(
        environment=LOCAL,
        name=name,
        driver="process",
        config={
            "command": ["{python}", "-m", "app.embedded.sample_service", "--name", name],
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


async def seed_local(context: AppContext, ports: LocalPorts | None = None) -> bool:
    """Create the ``local`` environment unless it exists; True when it was created.

    With ``ports``, its services use the ports claimed there (the configured ones when
    they were free), and an existing ``local`` environment is moved to them."""
    settings = context.settings
    wanted = {"backend": settings.local_backend_port, "frontend": settings.local_frontend_port}
    async with context.unit_of_work() as uow:
        if await uow.session.scalar(select(Environment.name).where(Environment.name == LOCAL)):
            if ports is not None:
                await _move_to_claimed_ports(uow.session, ports)
            await seed_components(uow.session)
            return False
        if ports is not None:
            wanted = {name: ports.claim(name, port) for name, port in wanted.items()}
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
        uow.session.add(_service("backend", wanted["backend"], 0))
        uow.session.add(_service("frontend", wanted["frontend"], 1))
        await uow.session.flush()
        await audit_service.record(
            uow.session,
            None,
            action="environment.seed",
            resource_type="environment",
            resource_id=LOCAL,
            summary={"services": list(SERVICES), "ports": wanted},
        )
        await seed_components(uow.session)
    logger.info("seeded the local environment (backend and frontend, process driver)")
    return True


async def seed_components(session: AsyncSession) -> bool:
    """The runbook's components (Frontend, Backend API, Database, Cache, File Storage),
    all operational, unless any component exists; True when they were created. A local
    service that exists is linked to its component."""
    if await session.scalar(select(Component.id).limit(1)) is not None:
        return False
    existing = {
        f"{env}/{name}"
        for env, name in (
            await session.execute(
                select(Service.environment, Service.name).where(Service.environment == LOCAL)
            )
        ).all()
    }
    now = utcnow()
    rows = [
        Component(
            id=new_id(),
            name=name,
            description=description,
            group_name=None,
            position=position,
            status="operational",
            manual_status="operational",
            services=[ref for ref in services if ref in existing],
            showcase=True,
            status_changed_at=now,
            created_at=now,
            updated_at=now,
            version=1,
        )
        for position, (name, description, services) in enumerate(COMPONENTS)
    ]
    await insert_rows(session, rows)
    await revision.bump(session)
    await audit_service.record(
        session,
        None,
        action="component.seed",
        resource_type="component",
        resource_id=None,
        summary={"components": [name for name, _, _ in COMPONENTS]},
    )
    logger.info("seeded the status page's components (%s)", ", ".join(n for n, _, _ in COMPONENTS))
    return True


async def _move_to_claimed_ports(session: AsyncSession, ports: LocalPorts) -> None:
    services = (
        await session.scalars(
            select(Service).where(
                Service.environment == LOCAL,
                Service.name.in_(SERVICES),
                Service.driver == "process",
            )
        )
    ).all()
    moved: dict[str, int] = {}
    for service in services:
        current = service.config.get("port")
        if not isinstance(current, int):
            continue
        port = ports.claim(service.name, current)
        if port != current:
            _point_at(service, port)
            moved[service.name] = port
    if moved:
        await session.flush()
        await audit_service.record(
            session,
            None,
            action="environment.seed",
            resource_type="environment",
            resource_id=LOCAL,
            summary={"services": sorted(moved), "ports": moved},
        )


async def stop_process_services(context: AppContext) -> int:
    """Stop every service of the ``process`` driver that runs from this state directory
    (``serve`` started them); the number stopped."""
    async with context.sessionmaker() as session:
        services = (await session.scalars(select(Service).where(Service.driver == "process"))).all()
    driver = drivers(context).get("process")
    stopped = 0
    for service in services:
        spec = ServiceSpec(
            service.environment,
            service.name,
            service.driver,
            service.config,
            service.health_url,
            service.health_timeout_seconds,
        )
        if await driver.current(spec) is None:
            continue
        lines: list[str] = []

        async def note(line: str, lines: list[str] = lines) -> None:
            lines.append(line)

        try:
            await driver.stop(spec, note)
        except Exception:
            logger.exception("could not stop %s/%s", service.environment, service.name)
            continue
        logger.info("stopped %s/%s: %s", service.environment, service.name, "; ".join(lines))
        stopped += 1
    return stopped
