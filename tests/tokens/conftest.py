"""Tests of ``/v1/tokens`` (``app/tokens``): issue, list, revoke; a secret is shown once.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
