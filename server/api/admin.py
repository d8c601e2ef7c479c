"""Admin API: users, devices and the audit trail. Every call here is recorded in the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from schemas.identity import (
    CollectToken,
    CollectTokenCreate,
    CollectTokenIssued,
    Device,
    User,
    UserCreate,
    UserUpdate,
)
from server.api.deps import allow, client_address, settings_of
from server.api.openapi import ADMIN, BEARER, BODY, PARAMS, problems
from server.auth import Principal
from server.services import audit, collect_tokens, identity


class UserController(Controller):
    path = "/api/v1/users"
    tags = ["admin"]
    guards = [allow("user.admin")]
    security = BEARER

    @post("/", summary="Create a user", responses=problems(*ADMIN, *BODY, 409))
    async def create_user(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[Principal],
        data: JSONBody[UserCreate],
    ) -> User:
        return await identity.create_user(admin, data, address=client_address(request))

    @get("/", summary="List users", responses=problems(*ADMIN))
    async def list_users(self, admin: NamedDependency[Principal]) -> list[User]:
        return await identity.list_users()

    @get("/{user_id:str}", summary="One user", responses=problems(*ADMIN, *PARAMS, 404))
    async def get_user(self, admin: NamedDependency[Principal], user_id: FromPath[str]) -> User:
        return await identity.get_user(user_id)

    @patch(
        "/{user_id:str}",
        summary="Change role, wards, password or disable",
        responses=problems(*ADMIN, *BODY, 404, 409),
    )
    async def update_user(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[Principal],
        user_id: FromPath[str],
        data: JSONBody[UserUpdate],
    ) -> User:
        return await identity.update_user(admin, user_id, data, address=client_address(request))

    @post(
        "/{user_id:str}/collect-tokens",
        summary="Make an ODK Collect app-user token acting as this user (shown once)",
        description="`server_url` is what Collect is configured with; `settings_qr` is the "
        "payload of the settings QR code Collect scans (base64 of zlib-compressed JSON).",
        responses=problems(*ADMIN, *BODY, 404),
    )
    async def create_collect_token(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[Principal],
        user_id: FromPath[str],
        data: JSONBody[CollectTokenCreate | None] = None,
    ) -> Response[CollectTokenIssued]:
        issued = await collect_tokens.create_token(
            settings_of(request),
            admin,
            user_id,
            data or CollectTokenCreate(),
            address=client_address(request),
        )
        # The token is shown this once: no cache may keep it.
        return Response(issued, status_code=201, headers={"Cache-Control": "no-store"})

    @get(
        "/{user_id:str}/collect-tokens",
        summary="The user's ODK Collect tokens (never their value)",
        responses=problems(*ADMIN, *PARAMS, 404),
    )
    async def list_collect_tokens(
        self, admin: NamedDependency[Principal], user_id: FromPath[str]
    ) -> list[CollectToken]:
        return await collect_tokens.list_tokens(user_id)

    @delete(
        "/{user_id:str}/collect-tokens/{token_id:str}",
        status_code=200,
        summary="Revoke an ODK Collect token: every Collect URL refuses it at once (403)",
        responses=problems(*ADMIN, *PARAMS, 404),
    )
    async def revoke_collect_token(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[Principal],
        user_id: FromPath[str],
        token_id: FromPath[str],
    ) -> CollectToken:
        return await collect_tokens.revoke_token(
            admin, user_id, token_id, address=client_address(request)
        )


class DeviceController(Controller):
    path = "/api/v1/devices"
    tags = ["admin"]
    guards = [allow("user.admin")]
    security = BEARER

    @get("/", summary="List devices", responses=problems(*ADMIN))
    async def list_devices(self, admin: NamedDependency[Principal]) -> list[Device]:
        return await identity.list_devices()

    @delete(
        "/{device_id:str}",
        status_code=200,
        summary="Revoke a device: its tokens are refused at once",
        responses=problems(*ADMIN, *PARAMS, 404),
    )
    async def revoke_device(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[Principal],
        device_id: FromPath[str],
    ) -> Device:
        return await identity.revoke_device(admin, device_id, address=client_address(request))


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["admin"]
    guards = [allow("audit.read")]
    security = BEARER

    @get("/", summary="Most recent audit entries", responses=problems(*ADMIN, *PARAMS))
    async def recent(
        self,
        admin: NamedDependency[Principal],
        limit: FromQuery[Annotated[int, Parameter(ge=1, le=1000)]] = 100,
    ) -> list[dict[str, Any]]:
        return await audit.recent(limit)
