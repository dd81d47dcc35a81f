"""Formula Ops: the operations runbook as a versioned, queued, audited REST API."""

__version__ = "0.1.0"
