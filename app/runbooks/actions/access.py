"""``access_review``: the runbook's Access Control Audit ("check active user sessions",
"check admin users") over this control plane's API tokens, by the tokens domain's own
review (:func:`app.tokens.service.review`).

Findings per unrevoked token: ``unused`` (no use for ``unused_days``, counting from its
creation when never used), ``no_expiry``, ``expired_not_revoked`` and ``admin``; plus
the listing of every admin token. What is shown of a token: its id, name, role,
environment and times — never its secret or hash. The step is a warning when a token has
a finding other than ``admin`` (and, with ``warn_on_admin``, when an admin token exists).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.auth.models import ApiToken
from app.core.db import utcnow
from app.core.registry import Registry
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome, level_outcome
from app.runs.models import Level
from app.tokens import service as token_service

LISTED = 200  # tokens named per list in the step's data
FINDINGS = ("unused", "no_expiry", "expired_not_revoked", "admin")
# The tokens domain names the unused finding after its default number of days.
_NAMES = {"unused_90_days": "unused"}


class AccessReviewParams(Params):
    unused_days: int = Field(
        default=token_service.UNUSED_DAYS, ge=1, le=3650, description="Unused this long."
    )
    warn_on_admin: bool = Field(
        default=False, description="An admin token is a warning by itself (else only listed)."
    )


def describe(row: ApiToken) -> dict[str, Any]:
    """What a review shows of a token: never its secret or hash."""
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "environment": row.environment,
        "created_at": row.created_at.isoformat(),
        "created_by": row.created_by,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }


async def access_review(params: AccessReviewParams, ctx: StepContext) -> StepOutcome:
    async with ctx.context.sessionmaker() as session:
        reviewed = await token_service.review(session, unused_days=params.unused_days)
        admins = await token_service.admins(session)
    counts = dict.fromkeys(FINDINGS, 0)
    items = []
    for row, found in reviewed:
        names = [_NAMES.get(f, f) for f in found]
        for name in names:
            counts[name] += 1
        items.append({**describe(row), "findings": names})
    worrying = [i for i in items if set(i["findings"]) - {"admin"}]
    if params.warn_on_admin:
        worrying = items
    level = Level.WARNING if worrying else Level.OK
    summary = (
        f"{len(items)} token(s) to look at: {counts['unused']} unused for "
        f"{params.unused_days} days, {counts['no_expiry']} without expiry, "
        f"{counts['expired_not_revoked']} expired but not revoked; "
        f"{len(admins)} admin token(s)"
    )
    data = {
        "summary": summary,
        "unused_days": params.unused_days,
        "counts": {**counts, "flagged": len(items), "admins": len(admins)},
        "findings": items[:LISTED],
        "findings_truncated": len(items) > LISTED,
        "admins": [describe(row) for row in admins[:LISTED]],
        "admins_truncated": len(admins) > LISTED,
        "reviewed_at": utcnow().isoformat(),
    }
    lines = [summary] + [
        f"  {i['id']} {i['name']} ({i['role']}): {', '.join(i['findings'])}, last used "
        f"{i['last_used_at'] or 'never'}"
        for i in items[:LISTED]
    ]
    return level_outcome(level, "\n".join(lines), data)


def register(registry: Registry) -> None:
    registry[ACTIONS].add(
        "access_review", Action(AccessReviewParams, access_review, idempotent=True)
    )
