"""Authorisation as ``Annotated`` dependencies: every non-public route takes one.

``Viewer``, ``Deployer``, ``Operator`` and ``Admin`` guard global resources;
:func:`require_role` with ``environment_scoped=True`` guards routes whose resources
belong to an environment (the service then filters by the token's restriction).
``tests/test_route_scopes.py`` walks the app and fails on a route with neither a scope
nor a place on the public list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import service as auth_service
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.deps import ContextDep, SharedTransactionDep
from app.core.logging import bind_log_context

_bearer = HTTPBearer(auto_error=False, description="An API token: `fops_<id>_<secret>`.")
ROLE_MARK = "required_role"
SCOPE_MARK = "token_scope"
# The capability a token may be limited to: the Alertmanager receiver.
ALERTS_SCOPE = "alerts"


def request_info(request: Request) -> auth_service.RequestInfo:
    return auth_service.RequestInfo(
        method=request.method,
        path=request.url.path,
        client_address=request.client.host if request.client else None,
        request_id=getattr(request.state, "request_id", None),
    )


async def current_principal(
    request: Request,
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    shared: SharedTransactionDep,
) -> Principal:
    principal = await auth_service.authenticate(
        context,
        credentials.credentials if credentials else None,
        request_info(request),
        shared=shared,
    )
    request.state.principal = principal
    bind_log_context(actor=principal.actor)  # the token id, never the token
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(
    role: Role, *, environment_scoped: bool = False, scope: str | None = None
) -> Callable[..., Awaitable[Principal]]:
    """A route's guard: a token of ``role`` (or above); with ``scope``, also a token
    limited to that capability, whatever its role."""

    async def dependency(
        request: Request, context: ContextDep, principal: CurrentPrincipal
    ) -> Principal:
        return await auth_service.require(
            context,
            principal,
            role,
            request_info(request),
            environment_scoped=environment_scoped,
            scope=scope,
        )

    setattr(dependency, ROLE_MARK, role)
    setattr(dependency, SCOPE_MARK, scope)
    dependency.environment_scoped = environment_scoped  # type: ignore[attr-defined]
    dependency.__name__ = f"require_{role.value}" + (f"_or_{scope}" if scope else "")
    return dependency


Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Deployer = Annotated[Principal, Depends(require_role(Role.DEPLOYER))]
Operator = Annotated[Principal, Depends(require_role(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]

# Routes whose resources belong to an environment: a restricted token sees only its own.
ScopedViewer = Annotated[Principal, Depends(require_role(Role.VIEWER, environment_scoped=True))]
ScopedOperator = Annotated[Principal, Depends(require_role(Role.OPERATOR, environment_scoped=True))]
ScopedDeployer = Annotated[Principal, Depends(require_role(Role.DEPLOYER, environment_scoped=True))]

# The Alertmanager receiver: a token limited to `alerts`, or an operator's.
AlertSender = Annotated[Principal, Depends(require_role(Role.OPERATOR, scope=ALERTS_SCOPE))]
