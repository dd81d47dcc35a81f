"""What a caller may read: the one place that says which environments a token sees.

A token restricted to an environment (``Principal.environment``) reads only the rows of
that environment; an unrestricted token, and a system actor (``None``: the worker, the
reconciler), read every row. Every query of an environment-scoped resource goes through
:func:`readable`, every check of one row through :func:`may_read`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

from app.auth.principal import Principal

S = TypeVar("S", bound=Select[Any])


def readable(
    statement: S, environment: InstrumentedAttribute[Any], principal: Principal | None
) -> S:
    """``statement`` limited to the rows ``principal`` may read, ``environment`` being the
    column that names a row's environment."""
    if principal is None or principal.environment is None:
        return statement
    return statement.where(environment == principal.environment)


def may_read(principal: Principal | None, environment: str | None) -> bool:
    """Whether ``principal`` may read a row of ``environment``."""
    return principal is None or principal.may_access_environment(environment)
