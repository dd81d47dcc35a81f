"""Maintenance windows: scheduled, started and ended on time; while one is in progress
its components are under maintenance, alerts for them open no incident, and its
environments are frozen for deployments (unless it is a deploy window)."""
