"""Tests of ``/v1/environments`` (``app/environments``): environments and services, ETags,
scoped reads, racing writes.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
