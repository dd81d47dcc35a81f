"""How a credential of ours is recognised, known to the lowest layer.

Every API token starts with ``fops_`` (:mod:`app.auth.secrets` builds and parses the
rest). Redaction and the refusal of tokens in query strings recognise a token by that
prefix alone, so they need nothing from :mod:`app.auth`
(:class:`app.core.errors.TokenInQuery` is the refusal).
"""

from __future__ import annotations

TOKEN_PREFIX = "fops"  # noqa: S105 (a marker, not a secret)


def looks_like_token(value: str) -> bool:
    return f"{TOKEN_PREFIX}_" in value
