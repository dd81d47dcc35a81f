"""Tests of the infrastructure in ``app/core``: settings, unit of work, pagination, problem
errors, input rules, log lines, the secrets rule.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
