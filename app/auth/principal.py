"""Who is asking: the authenticated token, or a system actor (CLI, schedule)."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.roles import Role


@dataclass(frozen=True)
class Principal:
    """The caller of a request, with what the audit trail records about it."""

    token_id: str | None
    name: str
    role: Role
    environment: str | None = None
    client_address: str | None = None
    request_id: str | None = None
    # A token limited to one capability (``alerts``: the Alertmanager receiver only);
    # None: everything its role allows.
    scope: str | None = None

    @property
    def actor(self) -> str:
        """How the caller is named in ``created_by``/``requested_by`` fields."""
        return f"token:{self.token_id}" if self.token_id else self.name

    def may_access_environment(self, environment: str | None) -> bool:
        return self.environment is None or self.environment == environment

    @classmethod
    def system(cls, name: str, role: Role = Role.ADMIN) -> Principal:
        """An actor that is not a token: ``cli:<user>``, ``schedule:<name>``, ``system``."""
        return cls(token_id=None, name=name, role=role)
