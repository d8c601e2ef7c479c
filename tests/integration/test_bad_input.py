"""Hostile input on both databases: deep bodies and control characters get a 400, never a 500."""

from __future__ import annotations

import logging
import re
import uuid

import httpx
import msgspec
import pytest
from litestar.routes import HTTPRoute

from server.api.input_guard import MAX_DEPTH
from server.db.tables import AppUser
from server.db.tables_sync import Submission
from tests.conftest import Backend
from tests.helpers import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    HOAN_KIEM,
    PASSWORD,
    Api,
    assert_problem,
    new_device_id,
    unique,
)
from tests.integration.sync.helpers import Device
from tests.integration.uploads.helpers import Tus, png, read_blob, sha256_hex
from tests.ops import hlc

pytestmark = pytest.mark.db

# Routes whose bodies are binary (tus bytes, multipart XLSForm files, ODK Collect's multipart
# submissions): never scanned.
BINARY_BODY_ROUTES = {
    ("POST", "/api/v1/uploads"),
    ("PATCH", "/api/v1/uploads/{upload_id:str}"),
    ("POST", "/api/v1/forms"),
    ("PUT", "/api/v1/forms/{form_id:str}/media/{filename:str}"),  # a form's image or CSV
    ("POST", "/collect/key/{token:str}/submission"),
    ("POST", "/collect/submission"),
}


def deep_json(levels: int) -> bytes:
    """A JSON object whose member "x" nests arrays: `levels` levels in all."""
    return b'{"x":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def deep_msgpack(levels: int) -> bytes:
    return b"\x81\xa1x" + b"\x91" * (levels - 2) + b"\x90"


def body_routes(db: Backend) -> list[tuple[str, str]]:
    found = []
    for route in db.app.routes:
        if isinstance(route, HTTPRoute):
            found += [
                (m, route.path) for m in route.methods if m in {"POST", "PUT", "PATCH", "DELETE"}
            ]
    return sorted(found)


def url_of(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def problems_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("fieldsync") and r.levelno >= logging.WARNING
    ]


async def device(api: Api) -> Device:
    return Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))


async def test_a_deep_body_answers_400_on_every_body_route_with_one_log_line_each(
    api: Api, db: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    routes = [r for r in body_routes(db) if r not in BINARY_BODY_ROUTES]
    assert BINARY_BODY_ROUTES <= set(body_routes(db))  # the exceptions still exist
    assert ("POST", "/api/v1/auth/login") in routes and ("POST", "/api/v1/sync/push") in routes
    caplog.set_level(logging.INFO, logger="fieldsync")

    for method, path in routes:
        response = await api.http.request(
            method,
            url_of(path),
            content=deep_json(1000),
            headers={**api.admin.headers, "content-type": "application/json"},
        )
        body = assert_problem(response, 400, "malformed_body")
        assert f"{MAX_DEPTH} levels" in body["detail"], (method, path)

    logged = problems_logged(caplog)
    assert len(logged) == len(routes), [r.getMessage() for r in logged]
    assert all(r.exc_info is None and "nested deeper" in r.getMessage() for r in logged)


async def test_deep_msgpack_is_refused_and_the_route_decides_how_a_body_is_read(api: Api) -> None:
    tablet = await device(api)
    msgpack = {**tablet.headers, "content-type": "application/msgpack"}
    for path in ("/api/v1/sync/push", "/api/v1/sync/pull"):
        response = await api.http.post(path, content=deep_msgpack(1000), headers=msgpack)
        assert_problem(response, 400, "malformed_body")
    # Login decodes JSON whatever the Content-Type says: a deep JSON body labelled msgpack.
    response = await api.http.post(
        "/api/v1/auth/login",
        content=deep_json(1000),
        headers={"content-type": "application/msgpack"},
    )
    assert_problem(response, 400, "malformed_body")


async def test_nesting_up_to_the_limit_is_decoded_as_usual(api: Api) -> None:
    tablet = await device(api)
    json_headers = {"content-type": "application/json"}
    at_limit = await api.http.post(
        "/api/v1/auth/login", content=deep_json(MAX_DEPTH), headers=json_headers
    )
    over = await api.http.post(
        "/api/v1/auth/login", content=deep_json(MAX_DEPTH + 1), headers=json_headers
    )
    assert_problem(at_limit, 400, "validation_failed")  # decoded: the username is missing
    assert_problem(over, 400, "malformed_body")

    msgpack = {**tablet.headers, "content-type": "application/msgpack"}
    at_limit = await api.http.post(
        "/api/v1/sync/pull", content=deep_msgpack(MAX_DEPTH), headers=msgpack
    )
    over = await api.http.post(
        "/api/v1/sync/pull", content=deep_msgpack(MAX_DEPTH + 1), headers=msgpack
    )
    assert_problem(at_limit, 400, "validation_failed")
    assert_problem(over, 400, "malformed_body")


def control_errors(response: httpx.Response) -> list[tuple[str, str]]:
    body = assert_problem(response, 400, "validation_failed")
    return [(e["path"], e["code"]) for e in body["errors"]]


async def test_a_nul_at_login_names_the_field(api: Api) -> None:
    response = await api.http.post(
        "/api/v1/auth/login",
        json={
            "username": ADMIN_USERNAME,
            "password": ADMIN_PASSWORD,
            "device_id": new_device_id(),
            "device_name": "d\u0000",
        },
    )
    assert control_errors(response) == [("$.device_name", "control_character")]
    assert "U+0000" in response.json()["errors"][0]["message"]


async def test_control_characters_in_a_user_are_refused_and_nothing_is_written(api: Api) -> None:
    username = unique("ctl")
    created = await api.http.post(
        "/api/v1/users",
        json={
            "username": username,
            "password": PASSWORD,
            "role": "outreach",
            "wards": [HOAN_KIEM],
            "full_name": "a\u0000b",
        },
        headers=api.admin.headers,
    )
    assert control_errors(created) == [("$.full_name", "control_character")]
    assert not await AppUser.exists().where(AppUser.username == username)

    user = await api.create_user()
    updated = await api.http.patch(
        f"/api/v1/users/{user['id']}",
        json={"full_name": "\u001b[31mred\u007f"},
        headers=api.admin.headers,
    )
    assert control_errors(updated) == [("$.full_name", "control_character")]
    stored = await api.http.get(f"/api/v1/users/{user['id']}", headers=api.admin.headers)
    assert stored.json()["full_name"] == user["full_name"]


@pytest.mark.parametrize("media", ["json", "msgpack"])
async def test_control_characters_reject_their_op_alone_and_the_device_goes_on(
    api: Api, media: str
) -> None:
    """Bad text in one op is that op's rejection, not the push's: a 400 would refuse the same
    outbox for ever (the device never rewrites a queued op). The op consumes its op_seq and is
    kept as a rejected submission, its control characters replaced by U+FFFD."""
    tablet = await device(api)
    op = tablet.inspection(
        HOAN_KIEM,
        data={"est_name": "Karaoke\u0000", "address\u0001": "x"},
        properties={"business_name": "Sao\u0085Mai", "kind": "karaoke"},
    )
    behind = tablet.inspection(HOAN_KIEM)
    body = {"protocol": 1, "device_id": tablet.session.device_id, "ops": [op, behind]}
    content, content_type = (
        (msgspec.json.encode(body), "application/json")
        if media == "json"
        else (msgspec.msgpack.encode(body), "application/msgpack")
    )
    response = await api.http.post(
        "/api/v1/sync/push",
        content=content,
        headers={**tablet.headers, "content-type": content_type},
    )

    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["status"] == "rejected"
    assert [(e["path"], e["code"]) for e in first["errors"]] == [
        ("$.submission.data.est_name", "control_character"),
        ('$.submission.data["address\\u0001"]', "control_character"),
        ("$.submission.entities[0].properties.business_name", "control_character"),
    ]
    assert second["status"] == "applied", second
    assert response.json()["last_op_seq"] == 2
    kept = await Submission.select(Submission.status, Submission.data).where(
        Submission.instance_id == op["submission"]["instance_id"]
    )
    assert [row["status"] for row in kept] == ["rejected"]
    data = kept[0]["data"]
    data = msgspec.json.decode(data) if isinstance(data, str) else data
    assert data["est_name"] == "Karaoke\ufffd" and data["address\ufffd"] == "x"
    entity_id = op["submission"]["entities"][0]["entity_id"]
    changes = await tablet.pull_all()
    assert entity_id not in {c["id"] for c in changes if c["type"] == "entity"}


async def test_control_characters_in_a_resolve_op_reject_that_op(api: Api) -> None:
    tablet = await device(api)
    resolve = {
        "op_seq": 1,
        "op_id": str(uuid.uuid4()),
        "hlc": hlc(node="dev"),
        "kind": "resolve",
        "resolve": {
            "conflict_id": str(uuid.uuid4()),
            "resolution_id": str(uuid.uuid4()),
            "value": "Sao\u0000Mai",
        },
    }
    response = await tablet.push(resolve)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["status"] == "rejected"
    assert [(e["path"], e["code"]) for e in result["errors"]] == [
        ("$.resolve.value", "control_character")
    ]


async def test_tab_newline_and_carriage_return_are_kept(api: Api) -> None:
    tablet = await device(api)
    name = "Karaoke\tSao Mai\r\nphố Huế"
    op = tablet.inspection(
        HOAN_KIEM, data={"est_name": name}, properties={"business_name": name, "kind": "karaoke"}
    )
    response = await tablet.push(op)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["status"] == "applied", response.text

    await tablet.pull_all()
    entity_id = op["submission"]["entities"][0]["entity_id"]
    assert tablet.store[entity_id]["properties"]["business_name"] == name


async def test_control_characters_in_query_and_path_parameters(api: Api) -> None:
    headers = api.admin.headers
    conflicts = await api.http.get("/api/v1/conflicts?ward=%00", headers=headers)
    assert control_errors(conflicts) == [("query.ward", "control_character")]
    user = await api.http.get("/api/v1/users/%00", headers=headers)
    assert control_errors(user) == [("path.user_id", "control_character")]
    versions = await api.http.get("/api/v1/forms/inspection%1b/versions", headers=headers)
    assert control_errors(versions) == [("path.form_id", "control_character")]
    submission = await api.http.get(
        f"/api/v1/submissions/{uuid.uuid4()}%00/attachments", headers=headers
    )
    assert control_errors(submission) == [("path.instance_id", "control_character")]


async def test_binary_bodies_are_left_alone(api: Api, db: Backend) -> None:
    worker = await api.user_session("inspector", [HOAN_KIEM])
    tus = Tus(api.http, worker.headers)
    data = png(4096)[:100] + b"\x00" * 10 + b"[" * 2000 + b'{"\\u0000' + png(4096)
    location = await tus.upload(data, chunk=1500)
    head = await tus.head(location)
    assert head.headers["upload-offset"] == str(len(data))
    assert await read_blob(db.app.state.blob_store, sha256_hex(data)) == data
