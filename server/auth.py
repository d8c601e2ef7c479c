"""Passwords (argon2id), access tokens (JWT, pinned HS256) and the request principal.

Every authenticated request re-reads the user, the device and the session (refresh-token family),
so disabling a user, revoking a device or ending a session refuses its tokens on the very next
request, not when they expire.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from litestar.connection import ASGIConnection

from schemas.errors import ErrorCode
from schemas.identity import CITY_WIDE
from server.errors import Unauthorized

ISSUER = "fieldsync"
AUDIENCE = "fieldsync-api"
ALGORITHM = "HS256"  # pinned: decode never trusts the token's own "alg" header

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@cache
def _dummy_hash() -> str:
    """Verified when the username does not exist, so a miss costs the same time as a wrong password.
    Made on first use: hashing costs about 0.4 s, which start-up should not pay."""
    return _hasher.hash(secrets.token_urlsafe(16))


def use_password_hasher(hasher: PasswordHasher) -> None:
    """Tests pick argon2's cheapest parameters; hashes made under other parameters still verify,
    since each hash carries its own."""
    global _hasher
    _hasher = hasher
    _dummy_hash.cache_clear()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return (
            _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from a valid token plus the live user and device rows."""

    user_id: str
    username: str
    role: str
    wards: tuple[str, ...]
    device_id: str

    @property
    def city_wide(self) -> bool:
        return CITY_WIDE in self.wards

    def may_see_ward(self, ward_code: str) -> bool:
        return self.city_wide or ward_code in self.wards

    def listed_wards(self, ward: str | None = None) -> list[str] | None:
        """The wards a listing of ward-held records may show: `ward` alone when asked for, else
        all of the caller's; None means every ward (city-wide), [] means none at all."""
        if ward:
            return [ward] if self.may_see_ward(ward) else []
        return None if self.city_wide else sorted(self.wards)

    @property
    def op_stream(self) -> str:
        """op_seq counts per (device, user): a tablet that changes hands starts a new stream for
        its new user, so no op is answered with another user's stored result (docs/protocol.md)."""
        return f"{self.device_id}:{self.user_id}"


def issue_access_token(
    *,
    secret: str,
    user_id: str,
    role: str,
    device_id: str,
    lifetime: timedelta,
    family_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """`fam` names the refresh-token family (the login session); a token without one is a
    family of its own that no refresh token backs, so it is refused once the database is asked."""
    now = now or datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": str(uuid.uuid4()),
        "did": device_id,
        "fam": family_id or str(uuid.uuid4()),
        "role": role,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret: str) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["iss", "aud", "sub", "exp", "iat", "jti", "did", "fam", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(
            "The access token has expired; refresh it.", code=ErrorCode.TOKEN_EXPIRED
        ) from None
    except jwt.InvalidAudienceError:
        raise Unauthorized(
            "The access token is not for this service.", code=ErrorCode.TOKEN_INVALID
        ) from None
    except jwt.PyJWTError:
        raise Unauthorized("The access token is not valid.", code=ErrorCode.TOKEN_INVALID) from None


def bearer_token(request: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "Send the access token as 'Authorization: Bearer <token>'.",
            code=ErrorCode.TOKEN_MISSING,
            headers={"WWW-Authenticate": 'Bearer realm="fieldsync"'},
        )
    return token.strip()
