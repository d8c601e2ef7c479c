"""Login, tokens, refresh rotation, revocation and throttling over HTTP, on both databases."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from litestar import Litestar

from server.app import create_app
from server.auth import ALGORITHM, AUDIENCE, ISSUER, issue_access_token
from server.db.tables import AuditLog
from tests.conftest import Backend, make_settings
from tests.helpers import PASSWORD, Api, assert_problem, login, new_device_id

pytestmark = pytest.mark.db


async def test_login_returns_protocol_shape(api: Api) -> None:
    user = await api.create_user("inspector", ["00070", "00004"])
    response = await api.http.post(
        "/api/v1/auth/login",
        json={
            "username": user["username"],
            "password": PASSWORD,
            "device_id": new_device_id(),
            "device_name": "Tab 7",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["user"] == {
        "id": user["id"],
        "username": user["username"],
        "role": "inspector",
        "wards": ["00004", "00070"],
    }
    claims = jwt.decode(
        body["access_token"], api.settings.secret_key, algorithms=[ALGORITHM], audience=AUDIENCE
    )
    assert claims["iss"] == ISSUER and claims["sub"] == user["id"] and claims["role"] == "inspector"
    assert {"exp", "iat", "jti", "did"} <= claims.keys()
    me = await api.http.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.json()["username"] == user["username"]


async def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    user = await api.create_user()
    wrong = await api.http.post(
        "/api/v1/auth/login",
        json={
            "username": user["username"],
            "password": "nope-nope-nope",
            "device_id": new_device_id(),
        },
    )
    unknown = await api.http.post(
        "/api/v1/auth/login",
        json={
            "username": "nobody-" + user["username"],
            "password": "nope-nope-nope",
            "device_id": new_device_id(),
        },
    )
    a, b = (
        assert_problem(wrong, 401, "invalid_credentials"),
        assert_problem(unknown, 401, "invalid_credentials"),
    )
    assert a["detail"] == b["detail"]


async def test_missing_token(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/wards"), 401, "token_missing")


async def test_expired_token(api: Api) -> None:
    token = issue_access_token(
        secret=api.settings.secret_key,
        user_id=api.admin.user["id"],
        role="admin",
        device_id=api.admin.device_id,
        lifetime=timedelta(minutes=15),
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    response = await api.http.get("/api/v1/wards", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "token_expired")


async def test_token_signed_with_another_key(api: Api) -> None:
    token = issue_access_token(
        secret="another-key-" + "y" * 40,
        user_id=api.admin.user["id"],
        role="admin",
        device_id=api.admin.device_id,
        lifetime=timedelta(minutes=15),
    )
    assert_problem(
        await api.http.get("/api/v1/wards", headers={"Authorization": f"Bearer {token}"}),
        401,
        "token_invalid",
    )


def _admin_claims(api: Api, **changes: Any) -> dict[str, Any]:
    """The claims of a valid admin access token, with `changes` applied."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": api.admin.user["id"],
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "did": api.admin.device_id,
        "role": "admin",
    }
    return {**claims, **changes}


async def test_alg_none_is_refused(api: Api) -> None:
    token = jwt.encode(_admin_claims(api), key=None, algorithm="none")
    assert_problem(
        await api.http.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"}),
        401,
        "token_invalid",
    )


async def test_wrong_audience(api: Api) -> None:
    token = jwt.encode(
        _admin_claims(api, aud="some-other-api"), api.settings.secret_key, algorithm=ALGORITHM
    )
    assert_problem(
        await api.http.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"}),
        401,
        "token_invalid",
    )


async def test_revoked_device_is_refused_on_the_next_request(api: Api) -> None:
    worker = await api.user_session("outreach")
    assert (await api.http.get("/api/v1/wards", headers=worker.headers)).status_code == 200
    revoke = await api.http.delete(f"/api/v1/devices/{worker.device_id}", headers=api.admin.headers)
    assert revoke.status_code == 200 and revoke.json()["revoked_at"]
    assert_problem(
        await api.http.get("/api/v1/wards", headers=worker.headers), 401, "device_revoked"
    )
    refreshed = await api.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": worker.refresh_token}
    )
    assert_problem(refreshed, 401, "refresh_revoked")
    again = await api.http.post(
        "/api/v1/auth/login",
        json={
            "username": worker.user["username"],
            "password": PASSWORD,
            "device_id": worker.device_id,
        },
    )
    assert_problem(again, 403, "device_revoked")


async def test_disabled_user_is_refused_on_the_next_request(api: Api) -> None:
    worker = await api.user_session("trainer")
    assert (await api.http.get("/api/v1/wards", headers=worker.headers)).status_code == 200
    patch = await api.http.patch(
        f"/api/v1/users/{worker.user['id']}", json={"disabled": True}, headers=api.admin.headers
    )
    assert patch.status_code == 200 and patch.json()["disabled"] is True
    assert_problem(
        await api.http.get("/api/v1/wards", headers=worker.headers), 401, "user_disabled"
    )
    assert_problem(
        await api.http.post("/api/v1/auth/refresh", json={"refresh_token": worker.refresh_token}),
        401,
        "refresh_revoked",
    )
    relogin = await api.http.post(
        "/api/v1/auth/login",
        json={
            "username": worker.user["username"],
            "password": PASSWORD,
            "device_id": new_device_id(),
        },
    )
    assert_problem(relogin, 403, "user_disabled")


async def test_refresh_rotates_and_reuse_kills_the_family(api: Api) -> None:
    worker = await api.user_session()
    first = await api.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": worker.refresh_token}
    )
    assert first.status_code == 200
    second_token = first.json()["refresh_token"]
    assert second_token != worker.refresh_token
    # The old token again: theft. The whole family dies, including the token just issued.
    reuse = await api.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": worker.refresh_token}
    )
    assert_problem(reuse, 401, "refresh_reused")
    assert_problem(
        await api.http.post("/api/v1/auth/refresh", json={"refresh_token": second_token}),
        401,
        "refresh_revoked",
    )
    # A fresh login is a new family and works.
    fresh = await login(api.http, worker.user["username"], PASSWORD, worker.device_id)
    assert (
        await api.http.post("/api/v1/auth/refresh", json={"refresh_token": fresh.refresh_token})
    ).status_code == 200


async def test_refresh_reuse_also_ends_the_familys_access_tokens(api: Api) -> None:
    worker = await api.user_session()
    other = await login(api.http, worker.user["username"], PASSWORD)  # another tablet's session
    rotated = await api.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": worker.refresh_token}
    )
    new_access = {"Authorization": f"Bearer {rotated.json()['access_token']}"}
    assert (await api.http.get("/api/v1/wards", headers=new_access)).status_code == 200
    reuse = await api.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": worker.refresh_token}
    )
    assert_problem(reuse, 401, "refresh_reused")
    # Both access tokens of the ended family are refused at once, not when they expire.
    for headers in (worker.headers, new_access):
        assert_problem(await api.http.get("/api/v1/wards", headers=headers), 401, "token_revoked")
    # Another session of the same user is a different family and goes on working.
    assert (await api.http.get("/api/v1/wards", headers=other.headers)).status_code == 200


async def test_garbage_refresh_token(client: httpx.AsyncClient) -> None:
    assert_problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": "garbage"}),
        401,
        "refresh_invalid",
    )


def _from(app: Litestar, address: str) -> httpx.AsyncClient:
    """A client whose requests arrive from `address` (the TCP peer the server sees)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test")


async def _login(
    http: httpx.AsyncClient, username: str, password: str, forwarded_for: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    body = {"username": username, "password": password, "device_id": new_device_id()}
    return await http.post("/api/v1/auth/login", json=body, headers=headers)


def _app_with(db: Backend, tmp_path: Path, **env: str) -> Litestar:
    """The same database and blob store, served with other settings."""
    return create_app(
        make_settings(tmp_path, db.url, **env), engine=db.engine, blob_store=db.app.state.blob_store
    )


async def _audit(username: str) -> list[dict[str, Any]]:
    return list(
        await AuditLog.select()
        .where(AuditLog.actor_username == username, AuditLog.action.like("auth.login%"))
        .order_by(AuditLog.id)
    )


async def test_login_lock_is_per_username_and_address(
    api: Api, db: Backend, tmp_path: Path
) -> None:
    limit = 3
    app = _app_with(db, tmp_path, FIELDSYNC_LOGIN_MAX_FAILURES=str(limit))
    user = await api.create_user()
    username = user["username"]
    attacker = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
    async with _from(app, attacker) as http:
        for name in (username, "ghost-" + uuid.uuid4().hex[:8]):
            answers = [await _login(http, name, "wrong-password") for _ in range(limit + 1)]
            assert [r.status_code for r in answers[:limit]] == [401] * limit
            # A username that does not exist locks the same way: the lock reveals nothing.
            locked = assert_problem(answers[limit], 429, "login_throttled")
            assert int(answers[limit].headers["Retry-After"]) > 0 and locked["retry_after"] > 0
        # Even the right password is refused from the locked address...
        assert_problem(await _login(http, username, PASSWORD), 429, "login_throttled")
    # ...but the worker, from their own tablet, is not locked out by someone else's guesses.
    async with _from(app, "198.51.100.7") as http:
        assert (await _login(http, username, PASSWORD)).status_code == 200
    entries = await _audit(username)
    assert [e["action"] for e in entries] == [
        *["auth.login_failed"] * limit,
        "auth.login_locked",
        "auth.login",
    ]
    assert [e["address"] for e in entries] == [attacker] * (limit + 1) + ["198.51.100.7"]
    assert all(e["target_id"] == user["id"] for e in entries[:-1])
    assert "wrong-password" not in str(entries) and PASSWORD not in str(entries)


async def test_failures_from_one_address_lock_no_one_else_there(
    api: Api, db: Backend, tmp_path: Path
) -> None:
    """Behind a reverse proxy or an office NAT every worker shares one address."""
    app = _app_with(db, tmp_path, FIELDSYNC_LOGIN_MAX_FAILURES="2")
    user = await api.create_user()
    shared = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
    async with _from(app, shared) as http:
        # The old per-address limit (2 x 4), spread over names so that no pair locks.
        for _ in range(8):
            r = await _login(http, f"ghost-{uuid.uuid4().hex[:8]}", "wrong-password")
            assert r.status_code == 401
        assert (await _login(http, user["username"], PASSWORD)).status_code == 200


async def test_concurrent_failures_are_each_counted(api: Api, db: Backend, tmp_path: Path) -> None:
    app = _app_with(db, tmp_path, FIELDSYNC_LOGIN_MAX_FAILURES="3")
    user = await api.create_user()
    async with _from(app, f"198.18.0.{uuid.uuid4().int % 250 + 1}") as http:
        guesses = await asyncio.gather(
            *(_login(http, user["username"], f"guess-{i}") for i in range(3))
        )
        assert [r.status_code for r in guesses] == [401] * 3, [r.text for r in guesses]
        assert_problem(await _login(http, user["username"], PASSWORD), 429, "login_throttled")


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    api: Api, db: Backend, tmp_path: Path
) -> None:
    app = _app_with(
        db, tmp_path, FIELDSYNC_TRUSTED_PROXIES="10.77.0.0/16", FIELDSYNC_LOGIN_MAX_FAILURES="2"
    )
    user = await api.create_user()
    username = user["username"]
    async with _from(app, "10.77.3.4") as proxy:
        for _ in range(2):
            r = await _login(proxy, username, "wrong-password", forwarded_for="203.0.113.5")
            assert r.status_code == 401
        # The lock is on the client behind the proxy, not on the proxy itself.
        locked = await _login(proxy, username, PASSWORD, forwarded_for="203.0.113.5")
        assert_problem(locked, 429, "login_throttled")
        ok = await _login(proxy, username, PASSWORD, forwarded_for="203.0.113.6")
        assert ok.status_code == 200
    # An untrusted peer cannot choose its address: a new forged header per guess does not help.
    async with _from(app, "10.78.0.9") as forger:
        for i in range(2):
            r = await _login(forger, username, "wrong-password", forwarded_for=f"198.51.100.{i}")
            assert r.status_code == 401
        refused = await _login(forger, username, PASSWORD, forwarded_for="198.51.100.99")
        assert_problem(refused, 429, "login_throttled")
    addresses = [(e["action"], e["address"]) for e in await _audit(username)]
    assert addresses == [
        ("auth.login_failed", "203.0.113.5"),
        ("auth.login_failed", "203.0.113.5"),
        ("auth.login_locked", "203.0.113.5"),
        ("auth.login", "203.0.113.6"),
        ("auth.login_failed", "10.78.0.9"),
        ("auth.login_failed", "10.78.0.9"),
        ("auth.login_locked", "10.78.0.9"),
    ]


async def test_shared_tablet_changes_hands(api: Api) -> None:
    first = await api.user_session()
    second_user = await api.create_user()
    second = await login(api.http, second_user["username"], PASSWORD, first.device_id)
    assert (await api.http.get("/api/v1/wards", headers=second.headers)).status_code == 200
    # The previous user's token names a device now bound to someone else.
    assert_problem(
        await api.http.get("/api/v1/wards", headers=first.headers), 401, "device_revoked"
    )
