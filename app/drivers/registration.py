"""What the drivers contribute: the ``process`` and ``docker`` driver types. Each
implementation module is imported only when a worker first makes an instance (the API
process validates configs without loading the docker SDK)."""

from __future__ import annotations

from app.core.registry import Registry
from app.drivers import docker_config
from app.drivers.base import DRIVERS, Driver, DriverSettings, DriverType
from app.drivers.process_config import ProcessConfig


def _process(settings: DriverSettings, connection: str | None) -> Driver:
    from app.drivers.process import ProcessDriver

    return ProcessDriver(settings, connection)


def _docker(settings: DriverSettings, docker_host: str | None) -> Driver:
    from app.drivers.docker import DockerDriver

    return DockerDriver(settings, docker_host)


def register(registry: Registry) -> None:
    drivers = registry[DRIVERS]
    drivers.add(
        "process",
        DriverType(
            config=ProcessConfig,
            description="Runs as a local process of the control plane's host.",
            create=_process,
        ),
    )
    drivers.add(
        "docker",
        DriverType(
            config=docker_config.DockerConfig,
            description="Runs as a container of the Docker engine at `DOCKER_HOST` "
            "(or `config.docker_host`).",
            create=_docker,
            connection=docker_config.connection,
            policy=docker_config.settings_problems,
        ),
    )
