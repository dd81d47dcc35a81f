"""The ``formula-ops`` command line."""
