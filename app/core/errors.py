"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the service answers goes through :func:`problem_response`: application
errors (:class:`AppError` subclasses carry their type, title and status), request
validation errors (422 with ``errors``), Starlette's 404/405/413, and unexpected
exceptions (a generic 500 with the request id; the traceback goes to the log only).

The error classes are raised by the services, which the worker runs too: FastAPI and
Starlette are imported by the functions that answer a request, not with this module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import redis.exceptions
import sqlalchemy.exc
from pydantic import BaseModel, ConfigDict, Field

from app.core.logging import escape

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"


class FieldError(BaseModel):
    """One invalid input: where it is, what is wrong, and a machine-readable code."""

    loc: list[str | int] = Field(description="Path to the invalid value, e.g. ['body', 'version'].")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI reference identifying the problem type.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path.")
    request_id: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="Field-level errors (422 only)."
    )


class AppError(Exception):
    """Base of expected errors; subclasses set ``type``, ``title`` and ``status``."""

    type: str = PROBLEM_BASE + "internal-error"
    title: str = "Internal server error"
    status: int = 500

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(AppError):
    type = PROBLEM_BASE + "bad-request"
    title = "Bad request"
    status = 400


class TokenInQuery(BadRequest):
    """A credential in the query string (:mod:`app.core.middleware` refuses it)."""

    type = PROBLEM_BASE + "token-in-query"
    title = "Credentials in the query string"


class NotFound(AppError):
    type = PROBLEM_BASE + "not-found"
    title = "Not found"
    status = 404


class MethodNotAllowed(AppError):
    type = PROBLEM_BASE + "method-not-allowed"
    title = "Method not allowed"
    status = 405


class PayloadTooLarge(AppError):
    type = PROBLEM_BASE + "payload-too-large"
    title = "Request body too large"
    status = 413


class ValidationFailed(AppError):
    type = PROBLEM_BASE + "validation-error"
    title = "Request validation failed"
    status = 422


class ServiceUnavailable(AppError):
    type = PROBLEM_BASE + "service-unavailable"
    title = "Service unavailable"
    status = 503


class PreconditionFailed(AppError):
    """``If-Match`` named an ETag the resource no longer has (RFC 9110 §13.1.1)."""

    type = PROBLEM_BASE + "precondition-failed"
    title = "Precondition failed"
    status = 412


class ConcurrentChange(AppError):
    type = PROBLEM_BASE + "concurrent-change"
    title = "Conflicting concurrent change"
    status = 409


def _status_type(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return PROBLEM_BASE + "http-error"
    return PROBLEM_BASE + phrase.lower().replace(" ", "-").replace("'", "")


def problem_response(
    request: Request,
    *,
    type: str,
    title: str,
    status: int,
    detail: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    from fastapi.responses import JSONResponse

    body: dict[str, Any] = {
        "type": type,
        "title": title,
        "status": status,
        "detail": detail if detail is not None else title,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    if errors is not None:
        body["errors"] = list(errors)
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        errors.append(
            {
                "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
                "msg": str(error.get("msg", "invalid value")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return errors


def _app_error_response(request: Request, exc: AppError) -> JSONResponse:
    return problem_response(
        request,
        type=exc.type,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        extra=exc.extra,
    )


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = _field_errors(exc)
    where = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
    return problem_response(
        request,
        type=ValidationFailed.type,
        title=ValidationFailed.title,
        status=422,
        detail=f"{len(errors)} invalid value(s): {where}" if errors else "invalid request",
        errors=errors,
    )


_STARLETTE_TITLES = {
    404: (NotFound.type, NotFound.title),
    405: (MethodNotAllowed.type, MethodNotAllowed.title),
    413: (PayloadTooLarge.type, PayloadTooLarge.title),
}


def _http_exception_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    type_, title = _STARLETTE_TITLES.get(status, (_status_type(status), _phrase(status)))
    detail = exc.detail if isinstance(exc.detail, str) else None
    if status == 404 and detail == "Not Found":
        detail = f"No resource at {request.url.path}"
    headers = dict(exc.headers or {})
    if status == 405:
        # Starlette names only the first route on the path; list every one of them.
        from app.core.routing import allowed_methods

        methods = allowed_methods(request.app, request.url.path)
        if methods:
            headers["Allow"] = ", ".join(methods)
        if detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(
        request, type=type_, title=title, status=status, detail=detail, headers=headers
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def render_error(request: Request, exc: Exception) -> JSONResponse | None:
    """The problem response for an expected error; None for an unexpected one (a 500)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    if isinstance(exc, AppError):
        return _app_error_response(request, exc)
    if isinstance(exc, RequestValidationError):
        return _validation_response(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return _http_exception_response(request, exc)
    return None


async def _handle_error(request: Request, exc: Exception) -> JSONResponse:
    response = render_error(request, exc)
    if response is None:  # only registered for the classes render_error knows
        raise exc
    return response


# The database or Redis busy (a lock not granted in time, the pool exhausted) or down:
# the request wrote nothing (its transaction rolled back) and may be sent again.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


async def _handle_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The class only: a statement's text or parameters may hold what must not be logged.
    logger.warning(
        "%s %s: a dependency is unavailable (%s)",
        escape(request.method),
        escape(request.url.path),
        type(exc).__name__,
    )
    error = ServiceUnavailable(
        "The database or Redis is busy or unreachable; nothing was changed. Retry shortly.",
        headers={"Retry-After": "2"},
    )
    return _app_error_response(request, error)


# SQLSTATE 23505 on PostgreSQL; SQLite names the primary key apart from other keys.
_UNIQUE_VIOLATIONS = {"23505", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}


def is_unique_violation(exc: sqlalchemy.exc.IntegrityError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "sqlite_errorname", None)
    return code in _UNIQUE_VIOLATIONS


async def _handle_integrity(request: Request, exc: Exception) -> JSONResponse:
    """A unique key taken meanwhile by a concurrent request (two ``PUT`` creating the same
    name): its transaction rolled back, so 409 and nothing was changed. Any other broken
    constraint is a defect and stays a 500."""
    assert isinstance(exc, sqlalchemy.exc.IntegrityError)
    if not is_unique_violation(exc):
        raise exc
    # The constraint's name only: the statement's parameters may hold secrets.
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    logger.warning(
        "%s %s: a concurrent request took the same key (%s); answered 409",
        request.method,
        request.url.path,
        constraint or exc.orig,
    )
    error = ConcurrentChange(
        "A concurrent request created or changed the same resource first; nothing was "
        "changed. Read it again, then retry."
    )
    return _app_error_response(request, error)


def install_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    for error in (AppError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(error, _handle_error)
    for unavailable in UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, _handle_unavailable)
    app.add_exception_handler(sqlalchemy.exc.IntegrityError, _handle_integrity)


def problem_responses(
    *errors: type[AppError], validation: bool = False
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the problems a route can answer."""
    by_status: dict[int, list[type[AppError]]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    if validation:
        by_status.setdefault(422, []).append(ValidationFailed)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, classes in sorted(by_status.items()):
        responses[status] = {
            "model": Problem,
            "description": "; ".join(_unique(c.title for c in classes)),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return responses


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))
