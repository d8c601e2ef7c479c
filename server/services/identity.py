"""Users, devices, login, refresh-token rotation and login throttling (PROTOCOL.md "Identity")."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from schemas.identity import (
    CITY_WIDE,
    Device,
    LoginRequest,
    TokenPair,
    User,
    UserCreate,
    UserSummary,
    UserUpdate,
)
from server import auth
from server.auth import Principal
from server.db.engine import locking, transaction
from server.db.json_columns import from_json, to_json
from server.db.tables import AppUser, LoginThrottle, RefreshToken
from server.db.tables import Device as DeviceRow
from server.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized
from server.permissions import CITY_WIDE_ROLES, role_can, roles_with
from server.services import audit
from server.services.wards import official_ward_codes
from server.settings import Settings

BAD_CREDENTIALS = "The username or password is not correct."
# A shared address (an office behind one NAT) gets more room than a single username.
ADDRESS_FAILURE_FACTOR = 4
# The longest a failed login is held back (the delay doubles per failure from 0.25 s).
MAX_FAILURE_DELAY_SECONDS = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


def _wards(value: Any) -> list[str]:
    return list(from_json(value) or [])


def _user(row: dict[str, Any]) -> User:
    return User(
        id=str(row["id"]),
        username=row["username"],
        full_name=row["full_name"],
        role=row["role"],
        wards=_wards(row["wards"]),
        disabled=row["disabled"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def normalise_wards(role: str, wards: Sequence[str], *, path: str = "$.wards") -> list[str]:
    """Admins are city-wide; everyone else needs official ward codes or ["*"]."""
    if role in CITY_WIDE_ROLES:
        return [CITY_WIDE]
    unique = sorted(set(wards))
    if not unique:
        raise BadRequest(
            'A non-admin user needs at least one ward, or ["*"] for city-wide scope.',
            code=ErrorCode.VALIDATION_FAILED,
            errors=[
                ErrorItem(
                    path=path, code=ErrorCode.REQUIRED, message='assign at least one ward or "*"'
                )
            ],
        )
    if CITY_WIDE in unique:
        if len(unique) > 1:
            raise BadRequest(
                'Use either ["*"] (city-wide) or a list of ward codes, not both.',
                code=ErrorCode.VALIDATION_FAILED,
                errors=[
                    ErrorItem(
                        path=path,
                        code=ErrorCode.INVALID,
                        message='"*" cannot be mixed with ward codes',
                    )
                ],
            )
        return [CITY_WIDE]
    known = official_ward_codes()
    errors = [
        ErrorItem(
            path=f"{path}[{i}]",
            code=ErrorCode.UNKNOWN_WARD,
            message=f"{code} is not a Hanoi ward code",
        )
        for i, code in enumerate(wards)
        if code not in known
    ]
    if errors:
        raise BadRequest(
            "Some ward codes are not official Hanoi ward codes.",
            code=ErrorCode.UNKNOWN_WARD,
            errors=errors,
        )
    return unique


# ---- users -------------------------------------------------------------------------------------


async def create_user(actor: Principal | None, data: UserCreate, *, address: str = "") -> User:
    wards = normalise_wards(data.role, data.wards)
    username = data.username.lower()
    user_id = uuid.uuid4()
    async with transaction():
        if await AppUser.exists().where(AppUser.username == username):
            raise Conflict(f"The username {username!r} is taken.", code=ErrorCode.USERNAME_TAKEN)
        await AppUser.insert(
            AppUser(
                id=user_id,
                username=username,
                full_name=data.full_name,
                password_hash=auth.hash_password(data.password),
                role=data.role,
                wards=to_json(wards),
            )
        )
        await audit.record(
            actor,
            "user.create",
            target_type="user",
            target_id=str(user_id),
            details={"username": username, "role": data.role, "wards": wards},
            address=address,
            actor_username="system",
        )
    return await get_user(str(user_id))


async def get_user(user_id: str) -> User:
    row = await AppUser.select().where(AppUser.id == _uuid(user_id, "user")).first()
    if row is None:
        raise NotFound("No such user.", code=ErrorCode.USER_NOT_FOUND)
    return _user(row)


async def list_users() -> list[User]:
    return [_user(r) for r in await AppUser.select().order_by(AppUser.username)]


async def count_admins() -> int:
    return await AppUser.count().where(_administers_users(), AppUser.disabled.eq(False))


async def update_user(
    actor: Principal, user_id: str, data: UserUpdate, *, address: str = ""
) -> User:
    current = await get_user(user_id)
    if data.disabled and current.id == actor.user_id:
        raise Conflict("You cannot disable your own account.", code=ErrorCode.CANNOT_DISABLE_SELF)
    role = data.role or current.role
    changes: dict[Any, Any] = {AppUser.updated_at: _now()}
    details: dict[str, Any] = {}
    if data.role is not None or data.wards is not None:
        wards = normalise_wards(role, data.wards if data.wards is not None else current.wards)
        changes[AppUser.role] = role
        changes[AppUser.wards] = to_json(wards)
        details.update(role=role, wards=wards)
    if data.full_name is not None:
        changes[AppUser.full_name] = data.full_name
        details["full_name"] = data.full_name
    if data.password is not None:
        changes[AppUser.password_hash] = auth.hash_password(data.password)
        details["password"] = "changed"  # noqa: S105  (the audit says that it changed, never the value)
    if data.disabled is not None:
        changes[AppUser.disabled] = data.disabled
        details["disabled"] = data.disabled
    async with transaction():
        if role_can(current.role, "user.admin") and (
            not role_can(role, "user.admin") or data.disabled
        ):
            await _refuse_if_last_admin(current.id)
        await AppUser.update(changes).where(AppUser.id == uuid.UUID(current.id))
        if data.disabled or data.password is not None:
            # A disabled account or a changed password ends every session at once.
            await RefreshToken.update({RefreshToken.revoked_at: _now()}).where(
                RefreshToken.user == uuid.UUID(current.id), RefreshToken.revoked_at.is_null()
            )
        await audit.record(
            actor,
            "user.update",
            target_type="user",
            target_id=current.id,
            details=details,
            address=address,
        )
    return await get_user(current.id)


def _administers_users() -> Any:
    return AppUser.role.is_in(list(roles_with("user.admin")))


async def _refuse_if_last_admin(user_id: str) -> None:
    """Inside the caller's transaction: 409 if no other active admin would remain."""
    query = AppUser.select(AppUser.id).where(_administers_users(), AppUser.disabled.eq(False))
    # Every active admin row is held, so two admins demoting each other at once serialise here.
    admins = {str(row["id"]) for row in await locking(query)}
    if user_id in admins and not admins - {user_id}:
        raise Conflict(
            "This is the last active administrator; make another user admin first.",
            code=ErrorCode.LAST_ADMIN,
        )


# ---- devices -----------------------------------------------------------------------------------


def _device(row: dict[str, Any]) -> Device:
    return Device(
        id=str(row["id"]),
        user_id=str(row["user"]),
        username=row["user.username"],
        name=row["name"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
        revoked_at=row["revoked_at"],
    )


async def list_devices() -> list[Device]:
    rows = await DeviceRow.select(*DeviceRow.all_columns(), DeviceRow.user.username).order_by(
        DeviceRow.created_at
    )
    return [_device(r) for r in rows]


async def revoke_device(actor: Principal, device_id: str, *, address: str = "") -> Device:
    did = _uuid(device_id, "device")
    async with transaction():
        row = (
            await DeviceRow.select(DeviceRow.id, DeviceRow.revoked_at)
            .where(DeviceRow.id == did)
            .first()
        )
        if row is None:
            raise NotFound("No such device.", code=ErrorCode.DEVICE_NOT_FOUND)
        if row["revoked_at"] is None:
            now = _now()
            await DeviceRow.update({DeviceRow.revoked_at: now}).where(DeviceRow.id == did)
            await RefreshToken.update({RefreshToken.revoked_at: now}).where(
                RefreshToken.device == did, RefreshToken.revoked_at.is_null()
            )
            await audit.record(
                actor, "device.revoke", target_type="device", target_id=str(did), address=address
            )
    rows = await DeviceRow.select(*DeviceRow.all_columns(), DeviceRow.user.username).where(
        DeviceRow.id == did
    )
    return _device(rows[0])


# ---- login, refresh, authenticate --------------------------------------------------------------


async def check_password(
    settings: Settings, username: str, password: str, *, address: str
) -> dict[str, Any]:
    """The user row if `password` is theirs; else 401, counted and throttled like every failed
    login (logins and ODK Collect's HTTP Basic both come here). Says nothing of `disabled`."""
    username = username.lower()
    # Only a (username, address) pair is ever locked: a lock per username would let anyone lock
    # out any worker, and a lock per address every worker behind one proxy or office NAT.
    pair_key = f"pair:{username}|{address}"
    await _refuse_if_locked(pair_key)
    row = await AppUser.select().where(AppUser.username == username).first()
    # argon2 takes a quarter of a second of CPU: off the event loop, so logins don't stall syncs.
    stored = row["password_hash"] if row else None
    if not await asyncio.to_thread(auth.verify_password, stored, password):
        delay = await _record_failure(
            settings, username, address, pair_key, user_id=str(row["id"]) if row else ""
        )
        await asyncio.sleep(delay)
        raise Unauthorized(BAD_CREDENTIALS, code=ErrorCode.INVALID_CREDENTIALS)
    assert row is not None
    await _clear_failures(pair_key)
    return row


async def user_row(username: str) -> dict[str, Any] | None:
    """The live row of a user by username (any case), or None."""
    return await AppUser.select().where(AppUser.username == username.lower()).first()


async def login(settings: Settings, req: LoginRequest, *, address: str) -> TokenPair:
    username = req.username.lower()
    row = await check_password(settings, username, req.password, address=address)
    if row["disabled"]:
        raise Forbidden("This account is disabled.", code=ErrorCode.USER_DISABLED)
    device_id = _uuid(req.device_id, "device", path="$.device_id")
    user_id = row["id"]
    async with transaction():
        device = await DeviceRow.select().where(DeviceRow.id == device_id).first()
        if device is not None and device["revoked_at"] is not None:
            raise Forbidden(
                "This device has been revoked; ask an administrator.", code=ErrorCode.DEVICE_REVOKED
            )
        if device is None:
            await DeviceRow.insert(DeviceRow(id=device_id, user=user_id, name=req.device_name))
        else:
            if device["user"] != user_id:
                # A shared tablet changes hands: the previous user's sessions on it end.
                await RefreshToken.update({RefreshToken.revoked_at: _now()}).where(
                    RefreshToken.device == device_id, RefreshToken.revoked_at.is_null()
                )
            await DeviceRow.update(
                {
                    DeviceRow.user: user_id,
                    DeviceRow.last_seen_at: _now(),
                    DeviceRow.name: req.device_name or device["name"],
                }
            ).where(DeviceRow.id == device_id)
        pair = await _issue_tokens(settings, row, str(device_id), family_id=uuid.uuid4())
        await audit.record(
            None,
            "auth.login",
            target_type="device",
            target_id=str(device_id),
            address=address,
            actor_username=username,
        )
    return pair


async def refresh(settings: Settings, refresh_token: str) -> TokenPair:
    digest = auth.token_digest(refresh_token)
    now = _now()
    async with transaction():
        token = await RefreshToken.select().where(RefreshToken.token_hash == digest).first()
        if token is None:
            raise Unauthorized("The refresh token is not valid.", code=ErrorCode.REFRESH_INVALID)
        if token["revoked_at"] is not None:
            raise Unauthorized(
                "This session has ended; log in again.", code=ErrorCode.REFRESH_REVOKED
            )
        if token["expires_at"] <= now:
            raise Unauthorized(
                "The refresh token has expired; log in again.", code=ErrorCode.REFRESH_EXPIRED
            )
        claimed = (
            await RefreshToken.update({RefreshToken.rotated_at: now})
            .where(RefreshToken.id == token["id"], RefreshToken.rotated_at.is_null())
            .returning(RefreshToken.id)
        )
        if claimed:
            user = await AppUser.select().where(AppUser.id == token["user"]).first()
            device = await DeviceRow.select().where(DeviceRow.id == token["device"]).first()
            if user is None or user["disabled"]:
                raise Unauthorized("This account is disabled.", code=ErrorCode.USER_DISABLED)
            if device is None or device["revoked_at"] is not None or device["user"] != user["id"]:
                raise Unauthorized("This device has been revoked.", code=ErrorCode.DEVICE_REVOKED)
            await DeviceRow.update({DeviceRow.last_seen_at: now}).where(
                DeviceRow.id == device["id"]
            )
            return await _issue_tokens(
                settings, user, str(device["id"]), family_id=token["family_id"]
            )
        # Presenting an already-rotated token means it was copied: end the whole family.
        await RefreshToken.update({RefreshToken.revoked_at: now}).where(
            RefreshToken.family_id == token["family_id"], RefreshToken.revoked_at.is_null()
        )
        await audit.record(
            None,
            "auth.refresh_reused",
            target_type="device",
            target_id=str(token["device"]),
            details={"family_id": str(token["family_id"])},
            actor_username="system",
        )
    raise Unauthorized(
        "This refresh token was already used; every session of it has ended.",
        code=ErrorCode.REFRESH_REUSED,
    )


async def _issue_tokens(
    settings: Settings, user: dict[str, Any], device_id: str, *, family_id: Any
) -> TokenPair:
    refresh_token = auth.new_refresh_token()
    now = _now()
    await RefreshToken.insert(
        RefreshToken(
            id=uuid.uuid4(),
            family_id=family_id,
            token_hash=auth.token_digest(refresh_token),
            user=user["id"],
            device=uuid.UUID(device_id),
            created_at=now,
            expires_at=now + timedelta(days=settings.refresh_token_days),
        )
    )
    lifetime = timedelta(minutes=settings.access_token_minutes)
    access = auth.issue_access_token(
        secret=settings.secret_key,
        user_id=str(user["id"]),
        role=user["role"],
        device_id=device_id,
        lifetime=lifetime,
        family_id=str(family_id),
        now=now,
    )
    return TokenPair(
        access_token=access,
        refresh_token=refresh_token,
        expires_in=int(lifetime.total_seconds()),
        user=UserSummary(
            id=str(user["id"]),
            username=user["username"],
            role=user["role"],
            wards=_wards(user["wards"]),
        ),
    )


async def authenticate(settings: Settings, token: str) -> Principal:
    claims = auth.decode_access_token(token, secret=settings.secret_key)
    try:
        user_id, device_id = uuid.UUID(claims["sub"]), uuid.UUID(claims["did"])
        family_id = uuid.UUID(claims["fam"])
    except (ValueError, TypeError, AttributeError):
        raise Unauthorized("The access token is not valid.", code=ErrorCode.TOKEN_INVALID) from None
    # Read the live rows every time: revocation and disabling apply on the very next request.
    row = (
        await DeviceRow.select(
            DeviceRow.revoked_at,
            DeviceRow.user.username,
            DeviceRow.user.role,
            DeviceRow.user.wards,
            DeviceRow.user.disabled,
        )
        .where(DeviceRow.id == device_id, DeviceRow.user == user_id)
        .first()
    )
    if row is None:
        raise Unauthorized("This device is not bound to this user.", code=ErrorCode.DEVICE_REVOKED)
    if row["revoked_at"] is not None:
        raise Unauthorized("This device has been revoked.", code=ErrorCode.DEVICE_REVOKED)
    if row["user.disabled"]:
        raise Unauthorized("This account is disabled.", code=ErrorCode.USER_DISABLED)
    # A family with no live refresh token was ended (reuse, password change): so are its tokens.
    live = await RefreshToken.exists().where(
        RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_null()
    )
    if not live:
        raise Unauthorized("This session has ended; log in again.", code=ErrorCode.TOKEN_REVOKED)
    return Principal(
        user_id=str(user_id),
        username=row["user.username"],
        role=row["user.role"],
        wards=tuple(_wards(row["user.wards"])),
        device_id=str(device_id),
    )


# ---- throttling --------------------------------------------------------------------------------


async def _refuse_if_locked(pair_key: str) -> None:
    now = _now()
    row = await LoginThrottle.select().where(LoginThrottle.key == pair_key).first()
    until = row["locked_until"] if row else None
    if until is not None and until > now:
        wait = max(1, math.ceil((until - now).total_seconds()))
        raise TooManyRequests(
            "Too many failed logins; try again later.",
            code=ErrorCode.LOGIN_THROTTLED,
            headers={"Retry-After": str(wait)},
            extra={"retry_after": wait},
        )


async def _record_failure(
    settings: Settings, username: str, address: str, pair_key: str, *, user_id: str
) -> float:
    """Count a failure per pair, username and address; lock the pair at its limit; audit both.
    Returns how long to hold the answer back: the username and address counts only slow down."""
    now = _now()
    window = timedelta(seconds=settings.login_lock_seconds)
    limit = settings.login_max_failures
    async with transaction():
        counts = {
            key: await _count_failure(key, now, window, lock_at=lock_at)
            for key, lock_at in (
                (pair_key, limit),
                (f"user:{username}", None),
                (f"addr:{address}", None),
            )
        }
        pair_failures = counts[pair_key]
        who = {"target_type": "user", "target_id": user_id, "address": address}
        await audit.record(
            None,
            "auth.login_failed",
            details={"failures": pair_failures},
            actor_username=username[:64],
            **who,
        )
        if pair_failures >= limit:
            await audit.record(
                None,
                "auth.login_locked",
                details={"failures": pair_failures, "seconds": settings.login_lock_seconds},
                actor_username=username[:64],
                **who,
            )
    # 0.25 s, 0.5 s, 1 s ... from the second failure of a username (or the 8th of an address).
    failures = max(counts[f"user:{username}"], counts[f"addr:{address}"] // ADDRESS_FAILURE_FACTOR)
    return 0.0 if failures < 2 else min(0.25 * 2 ** (failures - 2), MAX_FAILURE_DELAY_SECONDS)


async def _count_failure(key: str, now: datetime, window: timedelta, *, lock_at: int | None) -> int:
    """One more failure under `key` (counts older than the window start again); returns the count.
    A key with `lock_at` is locked for the window when its count reaches it."""
    # Concurrent first failures of one key must not both insert it: create it idempotently,
    # then hold its row.
    await LoginThrottle.insert(LoginThrottle(key=key, failures=0)).on_conflict(action="DO NOTHING")
    row = await locking(LoginThrottle.select().where(LoginThrottle.key == key)).first()
    assert row is not None
    last = row["last_failure_at"]
    failures = 1 if last is None or now - last > window else row["failures"] + 1
    locked_until = now + window if lock_at is not None and failures >= lock_at else None
    await LoginThrottle.update(
        {
            LoginThrottle.failures: 0 if locked_until else failures,
            LoginThrottle.last_failure_at: now,
            LoginThrottle.locked_until: locked_until,
        }
    ).where(LoginThrottle.key == key)
    return failures


async def _clear_failures(key: str) -> None:
    await LoginThrottle.delete().where(LoginThrottle.key == key)


def _uuid(value: str, what: str, *, path: str | None = None) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        if path:
            raise BadRequest(
                f"{value!r} is not a UUID.",
                code=ErrorCode.VALIDATION_FAILED,
                errors=[ErrorItem(path=path, code=ErrorCode.INVALID, message="expected a UUID")],
            ) from None
        raise NotFound(f"No such {what}.", code=ErrorCode(f"{what}_not_found")) from None


def principal_of(row: dict[str, Any], *, device_id: str) -> Principal:
    """A user row as the caller of a request made from `device_id`."""
    return Principal(
        user_id=str(row["id"]),
        username=row["username"],
        role=row["role"],
        wards=tuple(_wards(row["wards"])),
        device_id=device_id,
    )
