"""Request-scoped dependencies shared by every controller."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide

from server.auth import Principal, bearer_token, require_role
from server.services import identity
from server.settings import Settings


def settings_of(request: Request[Any, Any, Any]) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else ""


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return await identity.authenticate(settings_of(request), bearer_token(request))


async def provide_admin(request: Request[Any, Any, Any]) -> Principal:
    principal = await provide_principal(request)
    require_role(principal, "admin")
    return principal


DEPENDENCIES = {
    "principal": Provide(provide_principal),
    "admin": Provide(provide_admin),
}
