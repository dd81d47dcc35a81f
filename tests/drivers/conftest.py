"""Fixtures of the driver tests: the real Docker engine of :mod:`tests.docker_env`."""

from tests.docker_env import docker_env  # noqa: F401
