"""End-to-end tests: the ``formula-ops`` command and its processes (serve, api, worker), the
README walkthrough, the generated client.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
