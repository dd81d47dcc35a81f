"""The step actions the runbook catalog adds to the run engine (one module each, each
with its ``register(registry)``, called by :func:`app.runbooks.registration.register`)."""
