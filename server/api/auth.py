from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from schemas.identity import LoginRequest, RefreshRequest, TokenPair, UserSummary
from server.api.deps import ANY_ROLE, client_address, settings_of
from server.api.openapi import BEARER, BODY, SIGNED_IN, problems
from server.auth import Principal
from server.services import identity


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["identity"]

    @post(
        "/login",
        status_code=200,
        summary="Log in and bind this device",
        responses=problems(*BODY, 401, 403, 429),
    )
    async def login(
        self, request: Request[Any, Any, Any], data: JSONBody[LoginRequest]
    ) -> TokenPair:
        return await identity.login(settings_of(request), data, address=client_address(request))

    @post(
        "/refresh",
        status_code=200,
        summary="Rotate a refresh token",
        responses=problems(*BODY, 401),
    )
    async def refresh(
        self, request: Request[Any, Any, Any], data: JSONBody[RefreshRequest]
    ) -> TokenPair:
        return await identity.refresh(settings_of(request), data.refresh_token)

    @get(
        "/me",
        summary="Who am I",
        security=BEARER,
        responses=problems(*SIGNED_IN),
        guards=[ANY_ROLE],
    )
    async def me(self, principal: NamedDependency[Principal]) -> UserSummary:
        return UserSummary(
            id=principal.user_id,
            username=principal.username,
            role=principal.role,  # type: ignore[arg-type]
            wards=list(principal.wards),
        )
