"""``/v1/environments`` and their services (admin changes, viewers read) and pins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from fastapi.responses import JSONResponse

from app.auth.deps import Admin, ScopedOperator, ScopedViewer
from app.auth.errors import Forbidden, TooManyRequests, Unauthenticated
from app.auth.principal import Principal
from app.auth.roles import Role
from app.core.deps import ContextDep, CursorParamsDep, IfMatch, SessionDep, UnitOfWorkDep
from app.core.errors import BadRequest, PreconditionFailed, problem_responses
from app.core.paths import V1
from app.core.registry import Catalog
from app.drivers.base import DriverSettings, DriverType
from app.environments import presenters, service
from app.environments.schemas import (
    NAME,
    VERSION,
    EnvironmentCreate,
    EnvironmentIn,
    EnvironmentList,
    EnvironmentOut,
    PinList,
    ServiceBody,
    ServiceList,
    ServiceOut,
    service_schemas,
)
from app.idempotency.deps import IdempotencyDep
from app.idempotency.errors import PROBLEMS as IDEMPOTENCY_ERRORS

router = APIRouter(prefix=f"{V1}/environments", tags=["environments"])
AUTH_ERRORS = (Unauthenticated, Forbidden, TooManyRequests)
EnvName = Annotated[str, Path(pattern=NAME, max_length=63, description="Environment name.")]
ServiceName = Annotated[str, Path(pattern=NAME, max_length=63, description="Service name.")]
Version = Annotated[str, Path(pattern=VERSION, max_length=128, description="Pinned version.")]


def _holds(context: ContextDep) -> Sequence[service.Hold]:
    """What may hold an environment's services, as the domains registered it."""
    return context.registry[service.HOLDS].values()


Holds = Annotated[Sequence[service.Hold], Depends(_holds)]

WRITE_ERRORS = (*AUTH_ERRORS, BadRequest, PreconditionFailed)


def _admin(principal: Principal) -> bool:
    """Whether the caller reads environment variable values (they may hold secrets)."""
    return principal.role == Role.ADMIN


def _env_location(name: str) -> str:
    return f"{V1}/environments/{name}"


def _json(body: EnvironmentOut | ServiceOut, status: int, location: str) -> JSONResponse:
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status,
        headers={"ETag": service.etag(body.revision), "Location": location},
    )


@router.get(
    "",
    operation_id="listEnvironments",
    summary="List environments",
    responses=problem_responses(*AUTH_ERRORS, validation=True),
)
async def list_environments(
    principal: ScopedViewer, session: SessionDep, page: CursorParamsDep
) -> EnvironmentList:
    rows, next_cursor = await service.list_page(session, principal, page)
    return EnvironmentList(
        items=await presenters.environments_out(session, rows, reveal=_admin(principal)),
        next_cursor=next_cursor,
    )


@router.post(
    "",
    status_code=201,
    operation_id="createEnvironment",
    summary="Create an environment",
    response_model=EnvironmentOut,
    responses=problem_responses(
        *AUTH_ERRORS,
        service.EnvironmentExists,
        *IDEMPOTENCY_ERRORS,
        validation=True,
    ),
)
async def create_environment(
    body: EnvironmentCreate, principal: Admin, uow: UnitOfWorkDep, idem: IdempotencyDep
) -> JSONResponse:
    async with uow:
        await idem.claim(uow)
        fields = EnvironmentIn.model_validate(body.model_dump(exclude={"name"}))
        row = await service.create_environment(uow, principal, body.name, fields)
        (out,) = await presenters.environments_out(uow.session, [row], reveal=True)
        response = _json(out, 201, _env_location(row.name))
        await idem.complete(uow.session, response)
    return response


@router.get(
    "/{name}",
    operation_id="getEnvironment",
    summary="Get an environment",
    responses=problem_responses(*AUTH_ERRORS, service.EnvironmentNotFound, validation=True),
)
async def get_environment(
    principal: ScopedViewer, session: SessionDep, name: EnvName
) -> EnvironmentOut:
    row = await service.get_environment(session, principal, name)
    (out,) = await presenters.environments_out(session, [row], reveal=_admin(principal))
    return _json(out, 200, _env_location(name))  # type: ignore[return-value]


@router.put(
    "/{name}",
    operation_id="putEnvironment",
    summary="Create or replace an environment",
    response_model=EnvironmentOut,
    responses={
        201: {"model": EnvironmentOut, "description": "Created."},
        **problem_responses(*WRITE_ERRORS, validation=True),
    },
)
async def put_environment(
    body: EnvironmentIn,
    principal: Admin,
    uow: UnitOfWorkDep,
    name: EnvName,
    if_match: IfMatch = None,
) -> JSONResponse:
    """`If-Match` with the ETag last read refuses a stale write (412)."""
    async with uow:
        row, created = await service.put_environment(uow, principal, name, body, if_match)
        (out,) = await presenters.environments_out(uow.session, [row], reveal=True)
    return _json(out, 201 if created else 200, _env_location(name))


@router.delete(
    "/{name}",
    status_code=204,
    operation_id="deleteEnvironment",
    summary="Delete an environment and its services",
    responses=problem_responses(
        *WRITE_ERRORS, service.EnvironmentNotFound, service.DeploymentsActive, validation=True
    ),
)
async def delete_environment(
    principal: Admin, uow: UnitOfWorkDep, holds: Holds, name: EnvName, if_match: IfMatch = None
) -> Response:
    async with uow:
        await service.delete_environment(uow, principal, name, if_match, holds=holds)
    return Response(status_code=204)


@router.get(
    "/{name}/services",
    operation_id="listServices",
    summary="List an environment's services",
    responses=problem_responses(*AUTH_ERRORS, service.EnvironmentNotFound, validation=True),
)
async def list_services(principal: ScopedViewer, session: SessionDep, name: EnvName) -> ServiceList:
    await service.get_environment(session, principal, name)
    rows = (await service.services_of(session, [name]))[name]
    return ServiceList(items=await presenters.services_out(session, rows, reveal=_admin(principal)))


@router.get(
    "/{name}/services/{service_name}",
    operation_id="getService",
    summary="Get a service",
    responses=problem_responses(
        *AUTH_ERRORS, service.EnvironmentNotFound, service.ServiceNotFound, validation=True
    ),
)
async def get_service(
    principal: ScopedViewer, session: SessionDep, name: EnvName, service_name: ServiceName
) -> ServiceOut:
    row = await service.get_service(session, principal, name, service_name)
    (out,) = await presenters.services_out(session, [row], reveal=_admin(principal))
    return _json(out, 200, f"{_env_location(name)}/services/{service_name}")  # type: ignore[return-value]


@router.delete(
    "/{name}/services/{service_name}",
    status_code=204,
    operation_id="deleteService",
    summary="Delete a service",
    responses=problem_responses(
        *WRITE_ERRORS, service.ServiceNotFound, service.DeploymentsActive, validation=True
    ),
)
async def delete_service(
    principal: Admin,
    uow: UnitOfWorkDep,
    holds: Holds,
    name: EnvName,
    service_name: ServiceName,
    if_match: IfMatch = None,
) -> Response:
    async with uow:
        await service.delete_service(uow, principal, name, service_name, if_match, holds=holds)
    return Response(status_code=204)


@router.get(
    "/{name}/services/{service_name}/pins",
    operation_id="listPins",
    summary="List the versions pinned away from a service",
    responses=problem_responses(
        *AUTH_ERRORS, service.EnvironmentNotFound, service.ServiceNotFound, validation=True
    ),
)
async def list_pins(
    principal: ScopedViewer, session: SessionDep, name: EnvName, service_name: ServiceName
) -> PinList:
    await service.get_service(session, principal, name, service_name)
    pins = (await service.pins_of(session, name)).get(service_name, [])
    return PinList(items=[presenters.pin_out(p) for p in pins])


@router.delete(
    "/{name}/services/{service_name}/pins/{version}",
    status_code=204,
    operation_id="deletePin",
    summary="Unpin a version",
    responses=problem_responses(
        *AUTH_ERRORS,
        service.EnvironmentNotFound,
        service.ServiceNotFound,
        service.PinNotFound,
        validation=True,
    ),
)
async def delete_pin(
    principal: ScopedOperator,
    uow: UnitOfWorkDep,
    name: EnvName,
    service_name: ServiceName,
    version: Version,
) -> Response:
    """The version may be deployed again."""
    async with uow:
        await service.delete_pin(uow, principal, name, service_name, version)
    return Response(status_code=204)


def build_router(drivers: Catalog[DriverType]) -> APIRouter:
    """The environments' routes, with the one whose body depends on the registered
    drivers (``putService``) in its place after ``getService``; built when the
    application is created (:func:`app.api.build_api`)."""
    routes = APIRouter(prefix=f"{V1}/environments", tags=["environments"])

    async def put_service(
        body: ServiceBody,  # the registered drivers' union: set by service_router
        principal: Admin,
        uow: UnitOfWorkDep,
        name: EnvName,
        service_name: ServiceName,
        context: ContextDep,
        if_match: IfMatch = None,
    ) -> JSONResponse:
        """`config` is the driver's; `If-Match` refuses a stale write (412). A docker
        `network` of `host`/`container:<name>` and bind mounts of `/` or a Docker socket are
        refused (422) unless the server's settings allow them."""
        async with uow:
            row, created = await service.put_service(
                uow,
                principal,
                name,
                service_name,
                body,
                if_match,
                drivers=drivers,
                settings=DriverSettings.from_settings(context.settings),
            )
            (out,) = await presenters.services_out(uow.session, [row], reveal=True)
        return _json(out, 201 if created else 200, f"{_env_location(name)}/services/{service_name}")

    put_service.__annotations__["body"] = service_schemas(drivers).body
    routes.put(
        "/{name}/services/{service_name}",
        operation_id="putService",
        summary="Create or replace a service",
        response_model=ServiceOut,
        responses={
            201: {"model": ServiceOut, "description": "Created."},
            **problem_responses(*WRITE_ERRORS, service.EnvironmentNotFound, validation=True),
        },
    )(put_service)
    combined = APIRouter()
    combined.routes.extend(router.routes)
    after = next(i for i, r in enumerate(router.routes) if getattr(r, "name", "") == "get_service")
    combined.routes[after + 1 : after + 1] = routes.routes
    return combined
