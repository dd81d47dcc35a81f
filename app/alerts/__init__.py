"""The Prometheus Alertmanager receiver: firing alerts open or update incidents,
resolved ones move them to monitoring."""
