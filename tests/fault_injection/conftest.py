"""Fault injection: workers killed, databases and Redis lost or held, on real processes; each
test starts what it breaks.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
