"""Drivers run services: :mod:`app.drivers.process` and :mod:`app.drivers.docker`,
registered by :mod:`app.drivers.registration`, kept by :mod:`app.drivers.pool`."""
