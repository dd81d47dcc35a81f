"""Drivers run services: :mod:`app.drivers.process` and :mod:`app.drivers.docker`."""

from __future__ import annotations

from app.drivers.base import Driver, DriverContext

DRIVER_NAMES = ("process", "docker")


def get_driver(name: str, context: DriverContext) -> Driver:
    if name == "process":
        from app.drivers.process import ProcessDriver

        return ProcessDriver(context)
    if name == "docker":
        from app.drivers.docker import DockerDriver

        return DockerDriver(context)
    raise ValueError(f"unknown driver {name!r}")
