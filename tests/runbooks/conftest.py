"""The runbook actions' fixtures, shared with the catalog's tests: a scratch PostgreSQL
database and a long query running in it."""

from tests.runbook_actions.conftest import scratch_pg  # noqa: F401
from tests.runbook_actions.test_approvals import long_query  # noqa: F401
