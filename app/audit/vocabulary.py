"""The words of the audit trail as plain values (who acted, how it ended): the tables
(:mod:`app.audit.models`) and the command line share them without the database layer."""

from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILED = "failed"


class ActorKind(enum.StrEnum):
    """Who acted: an API token, a system actor (CLI, seed), or a run executed by a worker
    (whose ``origin_token_id`` names the token that requested it)."""

    TOKEN = "token"  # noqa: S105 - a kind of actor, not a credential
    SYSTEM = "system"
    RUN = "run"
    ANONYMOUS = "anonymous"
