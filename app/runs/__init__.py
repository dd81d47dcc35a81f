"""Runs: one execution of an operation, made of ordered steps."""
