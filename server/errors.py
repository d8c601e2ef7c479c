"""One error hierarchy and its rendering as RFC 9457 problem details.

Services raise `DomainError` subclasses with a stable `code`; the handlers here turn those, the
framework's own errors, and anything unexpected into application/problem+json. Nothing below lets a
stack trace or SQL text reach a client.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from schemas.common import ErrorItem, Problem

log = logging.getLogger("fieldsync.errors")

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str = "",
        *,
        code: str | None = None,
        errors: list[ErrorItem] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.instance_code = code or self.code
        self.errors = errors or []
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(DomainError):
    pass


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"
    title = "Authentication required"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class NotFound(DomainError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Gone(DomainError):
    status = 410
    code = "gone"
    title = "Gone"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class Unprocessable(DomainError):
    status = 422
    code = "unprocessable"
    title = "Unprocessable content"


class TooManyRequests(DomainError):
    status = 429
    code = "too_many_requests"
    title = "Too many requests"


class ServiceUnavailable(DomainError):
    status = 503
    code = "unavailable"
    title = "Service temporarily unavailable"


# Errors raised by the pure packages carry a `code`; this maps their class names to an HTTP status.
_PURE_ERROR_STATUS: dict[str, int] = {
    "BlobStoreUnavailable": 503,
    "BlobHashMismatch": 422,
    "BlobNotFound": 404,
    "CursorInvalid": 400,
    "CursorWrongDevice": 400,
    "FormImportError": 400,
    "ConflictStale": 409,
    "ResolutionInvalid": 400,
    "ClockSkew": 400,
    "HLCInvalid": 400,
}

_STATUS_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("too_many_requests", "Too many requests"),
    500: ("internal_error", "Internal server error"),
    503: ("unavailable", "Service temporarily unavailable"),
}


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str = "",
    *,
    errors: list[ErrorItem] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response[bytes]:
    problem = Problem(
        type=f"/problems/{code}",
        title=title,
        status=status,
        code=code,
        detail=detail,
        errors=errors or [],
        **(extra or {}),
    )
    return Response(
        content=msgspec.json.encode(problem),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )


def _domain_handler(_: Request[Any, Any, Any], exc: DomainError) -> Response[bytes]:
    return problem_response(
        exc.status,
        exc.instance_code,
        exc.title,
        exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        extra=exc.extra,
    )


def _validation_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            key = str(item.get("key") or "")
            path = _field_path(item.get("source"), key)
            message = str(item.get("message", ""))
            if message == f"'{key}'":  # litestar passes on the KeyError of a missing value
                message = "A body is required." if path == "$" else "This value is required."
            errors.append(ErrorItem(path=path, code="invalid", message=message))
    detail = (
        exc.detail
        if exc.detail and "Validation failed" not in exc.detail
        else "The request is not valid."
    )
    if not errors:
        detail = exc.detail or detail
    return problem_response(400, "validation_failed", "Invalid request", detail, errors=errors)


def _field_path(source: object, key: str) -> str:
    """`$`, `$.wards[0]` in the body (the JSON path msgspec and the sync endpoints use);
    `query.limit`, `path.user_id`, `header.x` for parameters."""
    where = str(getattr(source, "value", source) or "body")  # litestar's ParamType is an enum
    if where != "body":
        return f"{where}.{key}" if key else where
    # litestar names the whole body `data` (the handler's argument) and strips `data.` elsewhere
    if key in ("", "data") or key.startswith("$"):
        return key if key.startswith("$") else "$"
    return f"${key}" if key.startswith("[") else f"$.{key}"


def _http_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    code, title = _STATUS_CODES.get(status, ("http_error", "Request failed"))
    detail = exc.detail if exc.detail and status < 500 else title
    if status == 404:
        detail = "There is nothing at this address."
    if status == 400 and "malformed" in detail.lower():
        code = "malformed_body"
    headers = dict(exc.headers or {})
    return problem_response(status, code, title, detail, headers=headers)


def _unexpected_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    pure_status = _PURE_ERROR_STATUS.get(type(exc).__name__)
    if pure_status is not None:
        code = getattr(exc, "code", "error")
        title = _STATUS_CODES.get(pure_status, ("", "Request failed"))[1]
        headers = {"Retry-After": "5"} if pure_status == 503 else {}
        return problem_response(pure_status, code, title, str(exc), headers=headers)
    if is_transient_storage_error(exc):
        log.warning("transient failure on %s %s: %r", request.method, request.url.path, exc)
        return problem_response(
            503,
            "database_unavailable",
            "Service temporarily unavailable",
            "The database is not reachable right now; retry later.",
            headers={"Retry-After": "5"},
        )
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(
        500, "internal_error", "Internal server error", "Something went wrong on the server."
    )


def is_transient_storage_error(exc: BaseException) -> bool:
    """Database down, pool exhausted, SQLite busy: the client should retry, nothing was applied."""
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return True
    module = type(exc).__module__
    if module.startswith("asyncpg"):
        name = type(exc).__name__
        return name in {
            "ConnectionDoesNotExistError",
            "ConnectionFailureError",
            "CannotConnectNowError",
            "TooManyConnectionsError",
            "InterfaceError",
            "AdminShutdownError",
            "CrashShutdownError",
            "SerializationError",
            "DeadlockDetectedError",
        }
    return False


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    DomainError: _domain_handler,
    ValidationException: _validation_handler,
    HTTPException: _http_handler,
    Exception: _unexpected_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "DomainError", "MediaType", "problem_response"]
