"""The runbook catalog: the runbook's maintenance tasks, troubleshooting playbooks and
security operations as parameterised runs (YAML under ``runbooks/``)."""
