"""Long-lived driver instances: one per driver and connection (a Docker engine…), made
on first use and closed with the application context; the place for a driver's
credentials and pooled clients."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from app.core.context import AppContext
from app.core.registry import Catalog
from app.core.resources import ResourceKey
from app.drivers.base import Driver, DriverSettings, DriverType


class DriverPool:
    def __init__(self, types: Catalog[DriverType], settings: DriverSettings) -> None:
        self.types = types
        self.settings = settings
        self._instances: dict[tuple[str, Hashable | None], Driver] = {}

    def get(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        *,
        connection: Hashable | None = None,
    ) -> Driver:
        """The instance of driver ``name`` for the connection ``config`` uses, or for
        ``connection`` when given (a connection resolved above the drivers: a Docker
        engine an environment names, with its TLS identity);
        :class:`app.core.registry.NotRegistered` for an unknown driver."""
        driver_type = self.types.get(name)
        if connection is None:
            connection = driver_type.connection(config or {})
        key = (name, connection)
        instance = self._instances.get(key)
        if instance is None:
            instance = self._instances[key] = driver_type.create(self.settings, key[1])
        return instance

    async def aclose(self) -> None:
        instances, self._instances = list(self._instances.values()), {}
        for instance in instances:
            await instance.aclose()


DRIVER_POOL: ResourceKey[DriverPool] = ResourceKey("driver pool")


def drivers(context: AppContext) -> DriverPool:
    """The context's driver pool (added by :func:`app.bootstrap.build_context`)."""
    return context.resources[DRIVER_POOL]
