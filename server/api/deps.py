"""Request-scoped dependencies shared by every controller."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.types import Guard
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from server.auth import Principal, bearer_token
from server.permissions import Verb, require
from server.services import identity
from server.settings import Settings


def settings_of(request: ASGIConnection[Any, Any, Any, Any]) -> Settings:
    return request.app.state.settings


def client_address(request: Request[Any, Any, Any]) -> str:
    # The audit column and throttle keys hold 64 characters; a proxy could forward anything.
    return request.client.host[:64] if request.client else ""


def proxy_headers_middleware(settings: Settings) -> list[DefineMiddleware]:
    """Believe X-Forwarded-For only from FIELDSYNC_TRUSTED_PROXIES (none by default), so a caller
    cannot choose the address that the audit log records and login throttling counts."""
    if not settings.trusted_proxy_list:
        return []
    # uvicorn types its ASGI callables with its own aliases, which Litestar's do not name.
    proxy_headers: Any = ProxyHeadersMiddleware
    return [DefineMiddleware(proxy_headers, trusted_hosts=settings.trusted_proxy_list)]


async def provide_principal(request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller, authenticated once per request: the route's guard usually did it already."""
    principal: Principal | None = request.state.get("principal")
    if principal is None:
        principal = await identity.authenticate(settings_of(request), bearer_token(request))
        request.state["principal"] = principal
    return principal


async def provide_admin(request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller of an admin route: the route's guard has already asked the permission table."""
    return await provide_principal(request)


def allow(verb: Verb | None) -> Guard:
    """A guard admitting signed-in callers whose role is granted `verb` (any role for None).

    Every route carries one or is listed public (tests/integration/test_permissions.py)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if connection.scope.get("method") == "OPTIONS":
            return  # what a path allows (Litestar's automatic answer, tus capabilities) is public
        principal = await provide_principal(connection)
        if verb is not None:
            require(principal, verb)

    guard.verb = verb  # type: ignore[attr-defined]  # read by the route walk test
    return guard


ANY_ROLE = allow(None)

DEPENDENCIES = {
    "principal": Provide(provide_principal),
    "admin": Provide(provide_admin),
}
