"""Incidents: declared, acknowledged, updated and resolved, with response clocks from
their severity, the deployments that preceded them, and a postmortem."""
