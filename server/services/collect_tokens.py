"""ODK Collect app-user tokens: made by an admin for a user, shown once, revoked at once.

A token stands in the URL Collect is configured with (`{public_url}/collect/key/{token}`, usually
scanned from a settings QR code) and acts as its user: the same role, wards and permissions as the
native API, re-read on every request. Only the token's sha256 is stored.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from schemas.errors import ErrorCode
from schemas.identity import CollectToken, CollectTokenCreate, CollectTokenIssued
from server import auth
from server.auth import Principal
from server.db.engine import fetch, transaction
from server.db.tables import CollectToken as CollectTokenRow
from server.errors import Forbidden, NotFound
from server.services import audit
from server.services.identity import get_user, principal_of
from server.settings import Settings

# 48 random bytes, URL-safe base64: 64 characters that need no escaping in a URL path.
TOKEN_BYTES = 48
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{20,128}")
COLLECT_PATH = "/collect"
INVALID = "This Collect token is not valid or was revoked; ask an administrator for a new one."


def _now() -> datetime:
    return datetime.now(UTC)


def server_url(settings: Settings, token: str) -> str:
    """What Collect is configured with: its requests go to paths under it."""
    return f"{settings.public_base_url}{COLLECT_PATH}/key/{quote(token, safe='')}"


def settings_qr(server: str, project_name: str) -> str:
    """The settings QR code's payload as Collect decodes it: base64 of zlib-deflated JSON holding
    `general` and `admin` (required) and the project's name, in the order Central writes them."""
    settings = {"general": {"server_url": server}, "project": {"name": project_name}, "admin": {}}
    text = json.dumps(settings, ensure_ascii=False, separators=(",", ":"))
    return base64.b64encode(zlib.compress(text.encode("utf-8"))).decode("ascii")


def _token(row: dict[str, Any]) -> CollectToken:
    return CollectToken(
        id=str(row["id"]),
        user_id=str(row["user"]),
        name=row["name"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


async def create_token(
    settings: Settings,
    actor: Principal,
    user_id: str,
    data: CollectTokenCreate,
    *,
    address: str = "",
) -> CollectTokenIssued:
    user = await get_user(user_id)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    token_id = uuid.uuid4()
    now = _now()
    async with transaction():
        await CollectTokenRow.insert(
            CollectTokenRow(
                id=token_id,
                token_hash=auth.token_digest(token),
                user=uuid.UUID(user.id),
                name=data.name,
                created_at=now,
                created_by=uuid.UUID(actor.user_id),
            )
        )
        await audit.record(
            actor,
            "collect_token.create",
            target_type="user",
            target_id=user.id,
            details={"token_id": str(token_id), "name": data.name},
            address=address,
        )
    url = server_url(settings, token)
    return CollectTokenIssued(
        id=str(token_id),
        token=token,
        server_url=url,
        settings_qr=settings_qr(url, f"fieldsync: {user.username}"),
        created_at=now,
    )


async def list_tokens(user_id: str) -> list[CollectToken]:
    user = await get_user(user_id)
    rows = await (
        CollectTokenRow.select()
        .where(CollectTokenRow.user == uuid.UUID(user.id))
        .order_by(CollectTokenRow.created_at)
    )
    return [_token(row) for row in rows]


async def revoke_token(
    actor: Principal, user_id: str, token_id: str, *, address: str = ""
) -> CollectToken:
    """Idempotent: revoking a revoked token changes nothing and answers it as it is."""
    user = await get_user(user_id)
    try:
        tid = uuid.UUID(token_id)
    except ValueError:
        raise _not_found() from None
    async with transaction():
        row = (
            await CollectTokenRow.select()
            .where(CollectTokenRow.id == tid, CollectTokenRow.user == uuid.UUID(user.id))
            .first()
        )
        if row is None:
            raise _not_found()
        if row["revoked_at"] is None:
            row["revoked_at"] = _now()
            await CollectTokenRow.update({CollectTokenRow.revoked_at: row["revoked_at"]}).where(
                CollectTokenRow.id == tid
            )
            await audit.record(
                actor,
                "collect_token.revoke",
                target_type="user",
                target_id=user.id,
                details={"token_id": str(tid)},
                address=address,
            )
    return _token(row)


def _not_found() -> NotFound:
    return NotFound("This user has no such Collect token.", code=ErrorCode.COLLECT_TOKEN_NOT_FOUND)


async def principal_for_token(token: str) -> Principal:
    """The token's user, read live: a revoked token or a disabled user is refused at once (403,
    never 401: Collect would ask for a password it does not need)."""
    if not _TOKEN_SHAPE.fullmatch(token):
        raise Forbidden(INVALID, code=ErrorCode.COLLECT_TOKEN_INVALID)
    # Fixed SQL: it runs on every Collect request, and building the Piccolo join cost more
    # than the query (bench/bench_openrosa.py).
    rows = await fetch(
        "SELECT t.id, t.revoked_at, u.id AS user_id, u.username, u.role, u.wards, u.disabled "
        'FROM collect_token t JOIN app_user u ON u.id = t."user" WHERE t.token_hash = {}',
        auth.token_digest(token),
    )
    row = rows[0] if rows else None
    if row is None or row["revoked_at"] is not None:
        raise Forbidden(INVALID, code=ErrorCode.COLLECT_TOKEN_INVALID)
    if row["disabled"]:
        raise Forbidden("This account is disabled.", code=ErrorCode.USER_DISABLED)
    # The token is the "device": what it sends is told apart from the user's other tablets.
    return principal_of({**row, "id": row["user_id"]}, device_id=str(row["id"]))
