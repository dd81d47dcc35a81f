"""Idempotency-Key claims and stored responses."""
