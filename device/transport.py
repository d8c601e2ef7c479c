"""The device's HTTP to one server: bearer tokens, jittered backoff on transport errors, 503 and
429, one token refresh on 401 `token_expired`, problem+json turned into `SyncError`."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import httpx

from device.store import DeviceStore
from schemas.errors import ErrorCode
from schemas.sync import decode, encode

API = "/api/v1"
MSGPACK = "application/msgpack"

Sleep = Callable[[float], Awaitable[None]]
SaveTokens = Callable[[dict[str, Any]], object]


class SyncError(Exception):
    """The server refused a request (a problem+json `code`), or the device cannot go on."""

    code: ClassVar[ErrorCode] = ErrorCode.SYNC_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        problem: Any = None,
    ) -> None:
        super().__init__(message)
        self.instance_code = code or self.code
        self.status = status
        self.problem = problem or {}


class SyncUnavailable(SyncError):
    """The server stayed unreachable (or busy) through every retry: try again later."""

    code: ClassVar[ErrorCode] = ErrorCode.UNAVAILABLE


class Transport:
    """Requests to the server on behalf of one device; the tokens live in its store."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        store: DeviceStore,
        *,
        save_tokens: SaveTokens,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        max_attempts: int = 8,
        backoff_base: float = 0.2,
        backoff_cap: float = 30.0,
        msgpack: bool = False,
    ) -> None:
        self.http = http
        self.store = store
        self.save_tokens = save_tokens  # the client decides what a new token pair means
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.msgpack = msgpack

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        auth: bool = True,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send with jittered exponential backoff on transport errors, 503 and 429; refresh the
        access token once on 401 `token_expired`. Other problems raise `SyncError`."""
        refreshed = False
        attempt = 0
        while True:
            headers = {}
            if content is not None:
                headers["content-type"] = MSGPACK if self.msgpack else "application/json"
                headers["accept"] = MSGPACK if self.msgpack else "application/json"
            if auth:
                token = self.store.meta("access_token")
                if token is None:
                    raise SyncError("log in first", code=ErrorCode.NOT_LOGGED_IN)
                headers["authorization"] = f"Bearer {token}"
            retry_after: float | None = None
            try:
                response = await self.http.request(
                    method, path, json=json_body, content=content, headers=headers, params=params
                )
            except httpx.TransportError:
                response = None
            if response is not None:
                if response.status_code < 400:
                    return response
                if response.status_code == 401 and auth and not refreshed:
                    if problem_of(response).instance_code == "token_expired":
                        await self.refresh_tokens()
                        refreshed = True
                        continue
                if response.status_code not in (429, 503):
                    raise problem_of(response)
                retry_after = _retry_after(response)
            attempt += 1
            if attempt >= self.max_attempts:
                raise SyncUnavailable(f"{method} {path}: no answer after {attempt} attempts")
            await self.sleep(self.backoff(attempt, retry_after))

    async def refresh_tokens(self) -> None:
        refresh_token = self.store.meta("refresh_token")
        if refresh_token is None:
            raise SyncError("log in first", code=ErrorCode.NOT_LOGGED_IN)
        # Not retried: if the answer is lost the token is rotated anyway and resending it would
        # end the whole session family (theft detection); the caller logs in again then.
        response = await self.http.post(
            f"{API}/auth/refresh", json={"refresh_token": refresh_token}
        )
        if response.status_code != 200:
            raise problem_of(response)
        self.save_tokens(response.json())

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential with jitter, so many devices coming back online do not retry in step."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_cap))
        return delay

    def encode(self, value: Any) -> bytes:
        return encode(value, "msgpack" if self.msgpack else "json")

    def decode(self, response: httpx.Response, type_: type[Any]) -> Any:
        if response.headers.get("content-type", "").startswith(MSGPACK):
            return decode(response.content, type_, "msgpack")
        return decode(response.content, type_, "json")


def problem_of(response: httpx.Response) -> SyncError:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    return SyncError(
        str(problem.get("detail") or f"HTTP {response.status_code}"),
        code=str(problem.get("code") or f"http_{response.status_code}"),
        status=response.status_code,
        problem=problem,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
