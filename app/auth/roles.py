"""Roles, least to most privileged; each includes the rights of those before it."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    VIEWER = "viewer"  # read everything but secrets
    DEPLOYER = "deployer"  # viewer + create deployments and rollbacks (what CI gets)
    OPERATOR = "operator"  # deployer + runs, backups, incidents, maintenance, webhooks
    ADMIN = "admin"  # everything: restores, tokens, environments, the runbook catalog

    @property
    def rank(self) -> int:
        return _RANK[self]

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {role: rank for rank, role in enumerate(Role)}
