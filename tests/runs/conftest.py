"""Tests of the run engine (``app/runs``, ``workers/``): runs over HTTP, waiting, events,
cancel, the reconciler.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the ones only these tests share go here."""
