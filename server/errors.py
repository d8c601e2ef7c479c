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

import asyncpg.exceptions
import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from forms.xlsform import FormImportError, FormTooLarge
from schemas.common import ErrorItem, Problem
from schemas.errors import CodedError, ErrorCode
from sync.blobs import BlobHashMismatch, BlobNotFound, BlobStoreUnavailable
from sync.cursor import CursorInvalid, CursorWrongDevice
from sync.hlc import ClockSkew, HLCInvalid
from sync.merge import ConflictStale, ResolutionInvalid

log = logging.getLogger("fieldsync.errors")

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[ErrorCode] = ErrorCode.BAD_REQUEST
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str = "",
        *,
        code: ErrorCode | None = None,
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
    code = ErrorCode.UNAUTHORIZED
    title = "Authentication required"


class Forbidden(DomainError):
    status = 403
    code = ErrorCode.FORBIDDEN
    title = "Not allowed"


class NotFound(DomainError):
    status = 404
    code = ErrorCode.NOT_FOUND
    title = "Not found"


class Conflict(DomainError):
    status = 409
    code = ErrorCode.CONFLICT
    title = "Conflict"


class Gone(DomainError):
    status = 410
    code = ErrorCode.GONE
    title = "Gone"


class PayloadTooLarge(DomainError):
    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE
    title = "Payload too large"


class UnsupportedMediaType(DomainError):
    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    title = "Unsupported media type"


class Unprocessable(DomainError):
    status = 422
    code = ErrorCode.UNPROCESSABLE
    title = "Unprocessable content"


class TooManyRequests(DomainError):
    status = 429
    code = ErrorCode.TOO_MANY_REQUESTS
    title = "Too many requests"


class PreconditionFailed(DomainError):
    status = 412
    code = ErrorCode.TUS_VERSION_UNSUPPORTED
    title = "Unsupported protocol version"


class RangeNotSatisfiable(DomainError):
    status = 416
    code = ErrorCode.RANGE_NOT_SATISFIABLE
    title = "Range not satisfiable"


class ChecksumMismatch(DomainError):
    status = 460  # tus checksum extension: "Checksum Mismatch"
    code = ErrorCode.CHECKSUM_MISMATCH
    title = "Checksum mismatch"


class ServiceUnavailable(DomainError):
    status = 503
    code = ErrorCode.UNAVAILABLE
    title = "Service temporarily unavailable"


# The pure packages' errors that may reach a client, by type: a subclass answers as its base.
PURE_ERROR_STATUS: dict[type[CodedError], int] = {
    BlobStoreUnavailable: 503,
    BlobHashMismatch: 422,
    BlobNotFound: 404,
    CursorInvalid: 400,
    CursorWrongDevice: 400,
    FormTooLarge: 413,
    FormImportError: 400,
    ConflictStale: 409,
    ResolutionInvalid: 400,
    ClockSkew: 400,
    HLCInvalid: 400,
}

# Exact types: other InterfaceError subclasses (DataError...) are bugs, not outages.
_TRANSIENT_ASYNCPG_ERRORS: frozenset[type[Exception]] = frozenset(
    {
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.ConnectionFailureError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
    }
)


def pure_error_status(exc: CodedError) -> int | None:
    """The HTTP status of a pure package's error, from its nearest mapped class; None if unmapped."""
    return next((PURE_ERROR_STATUS[c] for c in type(exc).__mro__ if c in PURE_ERROR_STATUS), None)


_STATUS_CODES = {
    400: (ErrorCode.BAD_REQUEST, "Bad request"),
    401: (ErrorCode.UNAUTHORIZED, "Authentication required"),
    403: (ErrorCode.FORBIDDEN, "Not allowed"),
    404: (ErrorCode.NOT_FOUND, "Not found"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed"),
    406: (ErrorCode.NOT_ACCEPTABLE, "Not acceptable"),
    409: (ErrorCode.CONFLICT, "Conflict"),
    413: (ErrorCode.PAYLOAD_TOO_LARGE, "Payload too large"),
    415: (ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"),
    429: (ErrorCode.TOO_MANY_REQUESTS, "Too many requests"),
    500: (ErrorCode.INTERNAL_ERROR, "Internal server error"),
    503: (ErrorCode.UNAVAILABLE, "Service temporarily unavailable"),
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
            errors.append(ErrorItem(path=path, code=ErrorCode.INVALID, message=message))
    detail = (
        exc.detail
        if exc.detail and "Validation failed" not in exc.detail
        else "The request is not valid."
    )
    if not errors:
        detail = exc.detail or detail
    return problem_response(
        400, ErrorCode.VALIDATION_FAILED, "Invalid request", detail, errors=errors
    )


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
    code, title = _STATUS_CODES.get(status, (ErrorCode.HTTP_ERROR, "Request failed"))
    detail = exc.detail if exc.detail and status < 500 else title
    if status == 404:
        detail = "There is nothing at this address."
    if status == 400 and "malformed" in detail.lower():
        code = ErrorCode.MALFORMED_BODY
    headers = dict(exc.headers or {})
    return problem_response(status, code, title, detail, headers=headers)


def _pure_handler(request: Request[Any, Any, Any], exc: CodedError) -> Response[bytes]:
    status = pure_error_status(exc)
    if status is None:
        return _unexpected_handler(request, exc)
    title = _STATUS_CODES.get(status, (ErrorCode.HTTP_ERROR, "Request failed"))[1]
    headers = {"Retry-After": "5"} if status == 503 else {}
    return problem_response(status, exc.code, title, str(exc), headers=headers)


def _unexpected_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if is_transient_storage_error(exc):
        log.warning("transient failure on %s %s: %r", request.method, request.url.path, exc)
        return problem_response(
            503,
            ErrorCode.DATABASE_UNAVAILABLE,
            "Service temporarily unavailable",
            "The database is not reachable right now; retry later.",
            headers={"Retry-After": "5"},
        )
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(
        500,
        ErrorCode.INTERNAL_ERROR,
        "Internal server error",
        "Something went wrong on the server.",
    )


def is_transient_storage_error(exc: BaseException) -> bool:
    """Database down, pool exhausted, SQLite busy: the client should retry, nothing was applied."""
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return True
    return type(exc) in _TRANSIENT_ASYNCPG_ERRORS


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    DomainError: _domain_handler,
    CodedError: _pure_handler,
    ValidationException: _validation_handler,
    HTTPException: _http_handler,
    Exception: _unexpected_handler,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "DomainError", "MediaType", "problem_response"]
