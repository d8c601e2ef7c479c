"""Admin API: users, wards, devices, audit log; problem answers for bad input."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from server.db.tables import AppUser, AuditLog
from tests.conftest import Backend
from tests.helpers import PASSWORD, Api, assert_problem, login, unique

pytestmark = pytest.mark.db


async def test_wards_are_the_126_official_units(api: Api) -> None:
    response = await api.http.get("/api/v1/wards", headers=api.admin.headers)
    wards = response.json()
    assert len(wards) == 126
    assert sum(w["kind"] == "phường" for w in wards) == 51
    assert sum(w["kind"] == "xã" for w in wards) == 75
    assert {"code": "00070", "name": "Phường Hoàn Kiếm", "kind": "phường"} in wards


async def test_create_list_update_user(api: Api) -> None:
    user = await api.create_user("supervisor", ["00070"], full_name="Nguyễn Thị A")
    assert user["role"] == "supervisor" and user["wards"] == ["00070"] and not user["disabled"]
    assert "password" not in user and "password_hash" not in user
    listed = (await api.http.get("/api/v1/users", headers=api.admin.headers)).json()
    assert user["id"] in {u["id"] for u in listed}
    patched = await api.http.patch(
        f"/api/v1/users/{user['id']}",
        json={"role": "viewer", "wards": ["*"]},
        headers=api.admin.headers,
    )
    assert patched.status_code == 200
    assert patched.json()["role"] == "viewer" and patched.json()["wards"] == ["*"]


async def test_role_change_applies_on_next_request(api: Api) -> None:
    worker = await api.user_session("outreach")
    assert_problem(
        await api.http.get("/api/v1/users", headers=worker.headers), 403, "role_forbidden"
    )
    await api.http.patch(
        f"/api/v1/users/{worker.user['id']}", json={"role": "admin"}, headers=api.admin.headers
    )
    assert (await api.http.get("/api/v1/users", headers=worker.headers)).status_code == 200


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"wards": ["99999"]}, "unknown_ward", "$.wards[0]"),
        ({"wards": []}, "validation_failed", "$.wards"),
        ({"wards": ["*", "00070"]}, "validation_failed", "$.wards"),
        ({"password": "short"}, "validation_failed", "$.password"),
        ({"role": "superuser"}, "validation_failed", "$.role"),
        ({"username": "a"}, "validation_failed", "$.username"),
    ],
)
async def test_bad_user_input_is_a_problem_and_writes_nothing(
    api: Api, body: dict[str, object], code: str, path: str
) -> None:
    before = len((await api.http.get("/api/v1/users", headers=api.admin.headers)).json())
    payload = {
        "username": unique("bad"),
        "password": PASSWORD,
        "role": "outreach",
        "wards": ["00070"],
        **body,
    }
    problem = assert_problem(
        await api.http.post("/api/v1/users", json=payload, headers=api.admin.headers), 400, code
    )
    assert path in [e["path"] for e in problem["errors"]]
    assert len((await api.http.get("/api/v1/users", headers=api.admin.headers)).json()) == before


async def test_duplicate_username_conflicts(api: Api) -> None:
    user = await api.create_user()
    again = {
        "username": user["username"].upper(),
        "password": PASSWORD,
        "role": "outreach",
        "wards": ["00070"],
    }
    assert_problem(
        await api.http.post("/api/v1/users", json=again, headers=api.admin.headers),
        409,
        "username_taken",
    )


async def test_admin_cannot_disable_self(api: Api) -> None:
    response = await api.http.patch(
        f"/api/v1/users/{api.admin.user['id']}", json={"disabled": True}, headers=api.admin.headers
    )
    assert_problem(response, 409, "cannot_disable_self")


async def test_non_admin_cannot_use_admin_api(api: Api) -> None:
    supervisor = await api.user_session("supervisor")
    for method, path in [
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/devices"),
        ("DELETE", f"/api/v1/devices/{supervisor.device_id}"),
    ]:
        assert_problem(
            await api.http.request(method, path, headers=supervisor.headers), 403, "role_forbidden"
        )


async def test_unknown_ids_are_404(api: Api) -> None:
    assert_problem(
        await api.http.get("/api/v1/users/not-a-uuid", headers=api.admin.headers),
        404,
        "user_not_found",
    )
    assert_problem(
        await api.http.delete(
            "/api/v1/devices/00000000-0000-0000-0000-000000000000", headers=api.admin.headers
        ),
        404,
        "device_not_found",
    )


async def test_devices_listed_with_owner(api: Api) -> None:
    worker = await api.user_session()
    devices = (await api.http.get("/api/v1/devices", headers=api.admin.headers)).json()
    mine = next(d for d in devices if d["id"] == worker.device_id)
    assert mine["username"] == worker.user["username"] and mine["revoked_at"] is None


async def test_admin_actions_are_audited_and_the_log_is_append_only(api: Api, db: Backend) -> None:
    user = await api.create_user()
    await api.http.patch(
        f"/api/v1/users/{user['id']}", json={"disabled": True}, headers=api.admin.headers
    )
    entries = (await api.http.get("/api/v1/audit?limit=50", headers=api.admin.headers)).json()
    mine = [e for e in entries if e["target_id"] == user["id"]]
    assert [e["action"] for e in mine] == ["user.update", "user.create"]
    assert all(e["actor_username"] == "admin" for e in mine)
    assert mine[0]["details"] == {"disabled": True}
    with pytest.raises(Exception, match="append-only"):
        await AuditLog.update({AuditLog.action: "tampered"}).where(AuditLog.target_id == user["id"])
    with pytest.raises(Exception, match="append-only"):
        await AuditLog.delete().where(AuditLog.target_id == user["id"])


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_problem(await client.put("/health/live"), 405, "method_not_allowed")


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "malformed_body")


async def test_oversized_body_is_413(db: Backend, client: httpx.AsyncClient) -> None:
    body = b'{"refresh_token": "' + b"a" * (db.settings.max_body_bytes + 10) + b'"}'
    response = await client.post(
        "/api/v1/auth/refresh", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")


async def test_health(db: Backend, client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok", "checks": {}}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "blob_store": "ok"}}


async def test_openapi_schema_served(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/api/v1/auth/login" in schema["paths"] and "/api/v1/wards" in schema["paths"]
    assert (await client.get("/schema")).status_code == 200


async def test_the_last_active_admin_cannot_be_demoted_or_disabled(api: Api, db: Backend) -> None:
    first, second = await api.create_user("admin", ["*"]), await api.create_user("admin", ["*"])
    a = await login(api.http, first["username"], PASSWORD)
    b = await login(api.http, second["username"], PASSWORD)
    others = [
        row["id"]
        for row in await AppUser.select(AppUser.id).where(
            AppUser.role == "admin",
            AppUser.disabled.eq(False),
            AppUser.id.not_in([first["id"], second["id"]]),
        )
    ]
    # Leave exactly two active admins (the other tests' admins are put back afterwards).
    await AppUser.update({AppUser.disabled: True}).where(AppUser.id.is_in(others))
    try:
        # Each demotes the other at the same moment: exactly one may win.
        answers = await asyncio.gather(
            api.http.patch(
                f"/api/v1/users/{second['id']}", json={"role": "supervisor"}, headers=a.headers
            ),
            api.http.patch(
                f"/api/v1/users/{first['id']}", json={"role": "supervisor"}, headers=b.headers
            ),
        )
        assert sorted(r.status_code for r in answers)[0] == 200, [r.text for r in answers]
        loser = max(answers, key=lambda r: r.status_code)
        # The loser is refused by the check, or already demoted when its request is authenticated.
        assert (loser.status_code, loser.json()["code"]) in {
            (409, "last_admin"),
            (403, "role_forbidden"),
        }, loser.text
        survivor = a if answers[0].status_code == 200 else b
        survivor_id = survivor.user["id"]
        for change in ({"role": "viewer"}, {"role": "supervisor", "full_name": "Lan"}):
            assert_problem(
                await api.http.patch(
                    f"/api/v1/users/{survivor_id}", json=change, headers=survivor.headers
                ),
                409,
                "last_admin",
            )
        assert (
            await AppUser.count().where(AppUser.role == "admin", AppUser.disabled.eq(False))
        ) == 1
        still = await api.http.get("/api/v1/users", headers=survivor.headers)
        assert still.status_code == 200
    finally:
        await AppUser.update({AppUser.disabled: False}).where(AppUser.id.is_in(others))
