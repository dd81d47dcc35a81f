"""Fixtures shared with the catalog's tests: a scratch PostgreSQL database and a long
query running in it (the runbook actions' tests), and the real Docker engine."""

from tests.docker_env import docker_env  # noqa: F401  (the real Docker engine)
from tests.runbook_actions.conftest import scratch_pg  # noqa: F401
from tests.runbook_actions.test_approvals import long_query  # noqa: F401
