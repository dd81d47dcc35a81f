"""Tests of the runbook catalog's step actions (``app/runbooks/actions``): each handler
called with a real :class:`~app.runs.actions.StepContext` on the real database, Redis
and loopback servers, and a run of all of them executed by a real worker.

Fixtures shared by every folder (backends, settings, context, client, worker, admin,
deployer) are in ``tests/conftest.py``; the helpers these tests share are in
``helpers.py`` beside this file."""
