"""Tests of authentication (``app/auth``): token checks, roles, the failed-authentication limiter.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
