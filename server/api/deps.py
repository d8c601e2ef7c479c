"""Request-scoped dependencies shared by every controller."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from server.auth import Principal, bearer_token
from server.permissions import require
from server.services import identity
from server.settings import Settings


def settings_of(request: Request[Any, Any, Any]) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def client_address(request: Request[Any, Any, Any]) -> str:
    # The audit column and throttle keys hold 64 characters; a proxy could forward anything.
    return request.client.host[:64] if request.client else ""


def proxy_headers_middleware(settings: Settings) -> list[DefineMiddleware]:
    """Believe X-Forwarded-For only from FIELDSYNC_TRUSTED_PROXIES (none by default), so a caller
    cannot choose the address that the audit log records and login throttling counts."""
    if not settings.trusted_proxy_list:
        return []
    return [DefineMiddleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxy_list)]


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return await identity.authenticate(settings_of(request), bearer_token(request))


async def provide_admin(request: Request[Any, Any, Any]) -> Principal:
    principal = await provide_principal(request)
    require(principal, "user.admin")
    return principal


DEPENDENCIES = {
    "principal": Provide(provide_principal),
    "admin": Provide(provide_admin),
}
