"""The composition root: what every domain contributes is registered here, once, and
the application context (shared by the API, the worker and the command line) is built
here.

A new capability adds one line to :data:`REGISTRATIONS`: its ``register(registry)``.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from app import __version__
from app.backups import registration as backups
from app.backups import restore_registration as restores
from app.components import registration as components
from app.core.context import AppContext, HttpClient, RedisNotConfigured
from app.core.db import create_engine, make_sessionmaker, write_engine
from app.core.metrics import Metrics
from app.core.notify import RunNotifier
from app.core.queue import Queue, connect_redis
from app.core.registry import Registry
from app.core.secret_key import load_secret_key
from app.core.settings import Settings
from app.deployments import registration as deployments
from app.drivers import registration as drivers
from app.drivers.base import DRIVERS, DriverSettings
from app.drivers.pool import DRIVER_POOL, DriverPool
from app.health_checks import registration as health_checks
from app.incidents import registration as incidents
from app.maintenances import registration as maintenances
from app.runbooks import registration as runbooks
from app.runbooks.catalog import RUNBOOK_CATALOG, load_catalog
from app.runs import registration as runs
from app.schedules import registration as schedules
from app.webhooks import registration as webhooks
from app.webhooks.sender import SENDER, Sender

# Each domain's one registration function, called in this order.
REGISTRATIONS: tuple[Callable[[Registry], None], ...] = (
    runs.register,
    drivers.register,
    health_checks.register,
    deployments.register,
    webhooks.register,
    components.register,
    incidents.register,
    maintenances.register,
    backups.register,
    restores.register,
    runbooks.register,
    schedules.register,
)


def build_registry() -> Registry:
    """A new registry with every domain's contribution, frozen."""
    registry = Registry()
    for register in REGISTRATIONS:
        register(registry)
    return registry.freeze()


def build_context(
    settings: Settings, *, metrics: Metrics | None = None, registry: Registry | None = None
) -> AppContext:
    """Engines and clients connect lazily: building a context never blocks on a server."""
    if settings.redis_url is None:
        raise RedisNotConfigured(
            "FORMULA_OPS_REDIS_URL is not set; `formula-ops serve` starts an embedded Redis, "
            "`formula-ops api` and `formula-ops worker` need a Redis URL"
        )
    registry = registry or build_registry()
    engine = create_engine(settings)
    redis = connect_redis(
        settings.redis_url.get_secret_value(),
        queue_name=settings.queue_name,
        timeout=settings.ready_timeout_seconds,
    )
    context = AppContext(
        settings=settings,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        write_sessionmaker=make_sessionmaker(write_engine(engine)),
        redis=redis,
        queue=Queue(redis, settings.queue_name),
        http_client=HttpClient(timeout=10.0, headers={"User-Agent": f"formula-ops/{__version__}"}),
        notifier=RunNotifier(
            redis,
            settings.redis_prefix,
            Redis.from_url(
                settings.redis_url.get_secret_value(),
                socket_connect_timeout=settings.ready_timeout_seconds,
                socket_timeout=None,
                health_check_interval=30,
            ),
        ),
        secret_key=load_secret_key(settings),
        registry=registry,
        metrics=metrics or Metrics(),
    )
    context.resources.add(
        DRIVER_POOL, DriverPool(registry[DRIVERS], DriverSettings.from_settings(settings))
    )
    context.resources.add(SENDER, Sender(settings.webhooks))
    # A bad runbook file stops the start here, naming its file, line and field.
    context.resources.add(
        RUNBOOK_CATALOG, load_catalog(settings.runbooks.catalog_dirs, context.registry)
    )
    return context
