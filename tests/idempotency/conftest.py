"""Tests of ``Idempotency-Key`` (``app/idempotency``): replay, conflicts, the purge of expired keys.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
