"""Tests of the outbox and the event catalog (``app/outbox``).

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ``staging`` environment of the deployment
tests is shared from ``tests/deployments/conftest.py``."""

from __future__ import annotations

from tests.deployments.conftest import staging  # noqa: F401  (fixture)
