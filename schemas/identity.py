"""Wire types of PROTOCOL.md "Identity": login, tokens, users, devices, wards."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

import msgspec

from schemas.common import UUIDStr

Role = Literal["admin", "supervisor", "outreach", "trainer", "inspector", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)
CITY_WIDE = "*"

Username = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$", description="3-64 letters, digits, . _ -"
    ),
]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=200)]
AnyPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
WardAssignment = Annotated[
    list[Annotated[str, msgspec.Meta(pattern=r"^([0-9]{5}|\*)$")]],
    msgspec.Meta(max_length=200, description='Official ward codes, or ["*"] for city-wide'),
]
DeviceName = Annotated[str, msgspec.Meta(max_length=200)]


class LoginRequest(msgspec.Struct, kw_only=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: AnyPassword
    device_id: UUIDStr
    device_name: DeviceName = ""


class RefreshRequest(msgspec.Struct, kw_only=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class UserSummary(msgspec.Struct, kw_only=True):
    id: str
    username: str
    role: Role
    wards: list[str]


class TokenPair(msgspec.Struct, kw_only=True):
    access_token: str
    refresh_token: str
    expires_in: int
    user: UserSummary
    token_type: str = "Bearer"  # noqa: S105  (the OAuth token type, not a secret)


class User(msgspec.Struct, kw_only=True):
    id: str
    username: str
    full_name: str
    role: Role
    wards: list[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime


class UserCreate(msgspec.Struct, kw_only=True):
    username: Username
    password: Password
    role: Role
    wards: WardAssignment = msgspec.field(default_factory=list)
    full_name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class UserUpdate(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: Role | None = None
    wards: WardAssignment | None = None
    disabled: bool | None = None
    full_name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    password: Password | None = None


class Device(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    username: str
    name: str
    created_at: datetime
    last_seen_at: datetime
    revoked_at: datetime | None


class CollectTokenCreate(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=200, description="Which tablet or team")] = ""


class CollectTokenIssued(msgspec.Struct, kw_only=True):
    """A new ODK Collect app-user token: `token` is shown this once (only its hash is kept)."""

    id: str
    token: str
    server_url: str
    settings_qr: str
    created_at: datetime


class CollectToken(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


class Ward(msgspec.Struct, kw_only=True):
    code: str
    name: str
    kind: Literal["phường", "xã"]


class HealthStatus(msgspec.Struct, kw_only=True):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
