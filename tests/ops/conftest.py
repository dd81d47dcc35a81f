"""Tests of the operator endpoints (``app/ops``): ``/health``, ``/ready`` and ``/metrics``.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
