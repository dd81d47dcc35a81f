"""Alembic migrations (shipped as a package so installed copies can migrate too)."""
