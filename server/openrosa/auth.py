"""Who is calling on a Collect URL (odk.md §3): an app-user token in the path, or HTTP Basic.

Every Collect route lives twice: under `/collect/key/{token}` (the token is the credential; a
bad or revoked one answers 403, never 401, so Collect does not ask for a password it does not
need) and under `/collect` with HTTP Basic (no credentials: 401 with a `WWW-Authenticate: Basic`
challenge, which is the only thing that makes Collect send them). Either way the caller is an
ordinary `Principal`: the same role, wards and permissions as on the native API.

A password check costs an argon2 hash (a quarter of a second of CPU), and Collect sends the
credentials with every request once challenged. A successful check is remembered briefly, keyed
by an HMAC of the credentials; the user's row is still read on every request, so a password
change (its hash no longer matches) or a disabled account takes effect at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litestar import Controller
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler

from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from server.api.deps import settings_of
from server.auth import Principal
from server.db.engine import transaction
from server.errors import BadRequest, Forbidden, Unauthorized
from server.openrosa.documents import COLLECT_PREFIX, OPENROSA_VERSION
from server.services import audit, identity
from server.services.collect_tokens import principal_for_token

TOKEN_PATH = COLLECT_PREFIX + "/key/{token:str}"
BASIC_PATH = COLLECT_PREFIX
BASIC_CHALLENGE = 'Basic realm="fieldsync"'
# A Collect session (form list, manifests, downloads, a run of submissions) fits in two minutes;
# a stolen password check is no use to anyone after that.
BASIC_CACHE_SECONDS = 120.0
BASIC_CACHE_SIZE = 1024
# The `opt` of a Collect route that answers only requests with the OpenRosa version header.
_OPENROSA_ONLY_KEY = "openrosa_version_required"
OPENROSA_ONLY: dict[str, Any] = {_OPENROSA_ONLY_KEY: True}
# Requests authenticated by HTTP Basic come from this "device" of the user (a token is its own).
_BASIC_DEVICE_NAMESPACE = uuid.UUID("5b0f3c7e-4d1a-4c8e-9f21-6a7d2e0b9c31")


@dataclass(frozen=True)
class _Check:
    user_id: str
    password_hash: str
    expires_at: float


class PasswordChecks:
    """Successful password checks, for a short time and a bounded number of credentials.

    Keys are HMACs of username and password under the server's secret, so the cache holds nothing
    from which a password could be found. An entry answers only while the user's stored password
    hash is the one it was checked against."""

    def __init__(
        self,
        *,
        seconds: float = BASIC_CACHE_SECONDS,
        size: int = BASIC_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.size, self.clock = seconds, size, clock
        self._checks: OrderedDict[bytes, _Check] = OrderedDict()

    @staticmethod
    def key(secret: str, username: str, password: str) -> bytes:
        message = username.lower().encode() + b"\0" + password.encode()
        return hmac.new(secret.encode(), message, hashlib.sha256).digest()

    def holds(self, key: bytes, row: dict[str, Any]) -> bool:
        check = self._checks.get(key)
        if check is None:
            return False
        if check.expires_at <= self.clock():
            del self._checks[key]
            return False
        # A changed password has a new hash: the old credentials are checked (and fail) again.
        return check.user_id == str(row["id"]) and hmac.compare_digest(
            check.password_hash, row["password_hash"]
        )

    def remember(self, key: bytes, row: dict[str, Any]) -> None:
        self._checks.pop(key, None)
        self._checks[key] = _Check(
            str(row["id"]), row["password_hash"], self.clock() + self.seconds
        )
        while len(self._checks) > self.size:
            self._checks.popitem(last=False)  # the oldest check goes first

    def __len__(self) -> int:
        return len(self._checks)

    def clear(self) -> None:
        self._checks.clear()


password_checks = PasswordChecks()


def _challenge(detail: str, code: ErrorCode) -> Unauthorized:
    return Unauthorized(detail, code=code, headers={"WWW-Authenticate": BASIC_CHALLENGE})


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(username, password) of an `Authorization: Basic` header; None if it holds none."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon and username else None


def basic_device_id(user_id: str) -> str:
    return str(uuid.uuid5(_BASIC_DEVICE_NAMESPACE, user_id))


async def _basic_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    credentials = basic_credentials(connection.headers.get("authorization", ""))
    if credentials is None:
        raise _challenge(
            "Sign in with your fieldsync username and password.", ErrorCode.UNAUTHORIZED
        )
    username, password = credentials
    settings = settings_of(connection)
    key = PasswordChecks.key(settings.secret_key, username, password)
    row = await identity.user_row(username)
    if row is None or not password_checks.holds(key, row):
        address = connection.client.host[:64] if connection.client else ""
        try:
            row = await identity.check_password(settings, username, password, address=address)
        except Unauthorized as refused:
            raise _challenge(refused.detail, refused.instance_code) from None
        password_checks.remember(key, row)
        async with transaction():
            await audit.record(
                None,
                "auth.collect_basic",
                target_type="user",
                target_id=str(row["id"]),
                address=address,
                actor_username=row["username"],
            )
    if row["disabled"]:
        raise Forbidden("This account is disabled.", code=ErrorCode.USER_DISABLED)
    return identity.principal_of(row, device_id=basic_device_id(str(row["id"])))


async def collect_principal(request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller of a Collect URL, resolved once per request (the guard usually did it). The
    token in the path wins over any Authorization header. (Litestar hands a dependency the
    connection only under the name `request`.)"""
    principal: Principal | None = request.state.get("principal")
    if principal is None:
        token = request.path_params.get("token")
        if token is not None:
            principal = await principal_for_token(token)
        else:
            principal = await _basic_principal(request)
        request.state["principal"] = principal
    return principal


async def collect_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Authenticates before anything reads the body; then, on the routes whose `opt` is
    `OPENROSA_ONLY`, checks the OpenRosa version header. One guard for both: Litestar copies the
    route handler for every guard it runs, on every request."""
    if connection.scope.get("method") != "OPTIONS":
        await collect_principal(connection)
        if handler.opt.get(_OPENROSA_ONLY_KEY):
            require_openrosa_version(connection)


def require_openrosa_version(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Collect sends `X-OpenRosa-Version: 1.0` on every request; Central refuses an OpenRosa
    request without it (odk.md §2.2). Its `Date` header is never read (it is often malformed)."""
    if connection.headers.get("x-openrosa-version", "").strip() != OPENROSA_VERSION:
        raise BadRequest(
            f"Send the header X-OpenRosa-Version: {OPENROSA_VERSION}.",
            code=ErrorCode.VALIDATION_FAILED,
            errors=[
                ErrorItem(
                    path="header.X-OpenRosa-Version",
                    code=ErrorCode.REQUIRED,
                    message=f"expected {OPENROSA_VERSION}",
                )
            ],
        )


class CollectController(Controller):
    """Base of the controllers Collect talks to: mount a subclass with `at_collect_paths`.
    Handlers name the caller `principal` as everywhere else; here it comes from the token or
    HTTP Basic. XML, not JSON: outside the OpenAPI schema."""

    guards = [collect_guard]
    dependencies = {"principal": Provide(collect_principal)}
    include_in_schema = False
    tags = ["odk-collect"]


def at_collect_paths(controller: type[CollectController]) -> list[type[Controller]]:
    """`controller` mounted under both Collect prefixes: the token one and the Basic one."""
    return [
        type(f"{controller.__name__}{suffix}", (controller,), {"path": path})
        for suffix, path in (("ByToken", TOKEN_PATH), ("ByPassword", BASIC_PATH))
    ]
