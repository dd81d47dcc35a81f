"""The runbook's daily health check, as a run."""
