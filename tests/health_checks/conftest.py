"""Tests of health checks (``app/health_checks``): the scheduled daily check.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
