"""Schedules: cron expressions (with a time zone) that start runbook runs, once per slot."""
