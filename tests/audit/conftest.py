"""Tests of the audit trail (``app/audit``): one row per change or refusal, the hash chain, the
listing's query plans.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
