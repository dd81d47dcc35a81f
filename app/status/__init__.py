"""The public status: Atlassian-Statuspage-compatible JSON under ``/api/v2`` and the
server-rendered HTML page at ``/status``."""
