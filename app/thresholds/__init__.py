"""The runbook's thresholds, defined once: health-check levels, post-deploy
verification and alert severities all read them."""
