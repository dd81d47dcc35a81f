"""What the drivers contribute: the ``process`` and ``docker`` driver types. A driver's
implementation module is imported only when a worker first makes an instance (the API
process validates configs with the config models, and never loads the docker SDK)."""

from __future__ import annotations

from app.core.registry import Registry
from app.drivers import docker_config
from app.drivers.base import DRIVERS, DriverType, lazy
from app.drivers.process_config import ProcessConfig


def register(registry: Registry) -> None:
    drivers = registry[DRIVERS]
    drivers.add(
        "process",
        DriverType(
            config=ProcessConfig,
            description="Runs as a local process of the control plane's host.",
            create=lazy("app.drivers.process:ProcessDriver"),
        ),
    )
    drivers.add(
        "docker",
        DriverType(
            config=docker_config.DockerConfig,
            description="Runs as a container of the Docker engine at `DOCKER_HOST` "
            "(or `config.docker_host`).",
            create=lazy("app.drivers.docker:DockerDriver"),
            connection=docker_config.connection,
            policy=docker_config.settings_problems,
        ),
    )
