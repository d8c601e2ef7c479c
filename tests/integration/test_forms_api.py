"""Forms over HTTP on both databases: upload, publish, versions, device lists, validation."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from forms.odk_validate import java_runtime
from forms.xlsform import MAX_XLSX_UNPACKED_BYTES
from server.db.tables_forms import Form, FormVersion
from tests.helpers import XLSX, Api, assert_problem, unique
from tests.unit.forms.xlsforms import q, with_first_sheet_edited, xlsform

INSPECTION = Path(__file__).parents[2] / "forms" / "templates" / "inspection.xlsx"

pytestmark = pytest.mark.db


def visit_form(form_id: str, version: str = "1", *, age_type: str = "integer") -> bytes:
    return xlsform(
        [
            q(
                "text",
                "ward_code",
                "Mã phường",
                required="yes",
                constraint="regex(., '^[0-9]{5}$')",
            ),
            q(
                age_type,
                "age",
                "Tuổi",
                constraint=". >= 0 and . <= 120",
                constraint_message="Tuổi 0-120",
            ),
            q("select_one yn", "consent", "Đồng ý", required="yes"),
            q("text", "reason", "Lý do", relevant="${consent} = 'no'", required="yes"),
        ],
        [("yn", "yes", "Có"), ("yn", "no", "Không")],
        form_id=form_id,
        version=version,
    )


async def upload(api: Api, content: bytes, filename: str = "form.xlsx"):
    return await api.http.post(
        "/api/v1/forms", files={"file": (filename, content, XLSX)}, headers=api.admin.headers
    )


async def publish(api: Api, form_id: str, **body: object):
    return await api.http.post(
        f"/api/v1/forms/{form_id}/publish", json=body, headers=api.admin.headers
    )


async def test_upload_publish_and_download_pinned_versions(api: Api) -> None:
    form_id = unique("visit_")
    draft = await upload(api, visit_form(form_id))
    assert draft.status_code == 201, draft.text
    body = draft.json()
    assert body["form_id"] == form_id
    assert [f["name"] for f in body["draft"]["fields"]][:4] == [
        "ward_code",
        "age",
        "consent",
        "reason",
    ]
    published = await publish(api, form_id)
    assert published.status_code == 201, published.text
    spec = published.json()
    assert spec["version"] == "1" and len(spec["hash"]) == 64

    again = await api.http.get(f"/api/v1/forms/{form_id}/versions/1", headers=api.admin.headers)
    assert again.json() == spec
    assert again.headers["etag"] == f'"{spec["hash"]}"'
    assert "immutable" in again.headers["cache-control"]
    cached = await api.http.get(
        f"/api/v1/forms/{form_id}/versions/1",
        headers={**api.admin.headers, "If-None-Match": again.headers["etag"]},
    )
    assert cached.status_code == 304
    xform = await api.http.get(
        f"/api/v1/forms/{form_id}/versions/1/xform", headers=api.admin.headers
    )
    assert xform.status_code == 200 and "<h:html" in xform.text
    assert xform.headers["content-type"].startswith("application/xml")

    # Publishing the same version again is refused; version 1 stays as it was.
    await upload(api, visit_form(form_id))
    assert_problem(await publish(api, form_id), 409, "version_exists")
    assert (await publish(api, form_id, version="2")).status_code == 201
    # The sheet says version 1: the XForm served as version 2 must say 2, since Collect sends
    # that attribute back with every submission.
    served = await api.http.get(
        f"/api/v1/forms/{form_id}/versions/2/xform", headers=api.admin.headers
    )
    assert f'<data id="{form_id}" version="2">' in served.text
    assert 'version="1"' not in served.text
    versions = (
        await api.http.get(f"/api/v1/forms/{form_id}/versions", headers=api.admin.headers)
    ).json()
    assert [(v["version"], v["status"]) for v in versions] == [
        ("1", "published"),
        ("2", "published"),
    ]
    still = await api.http.get(f"/api/v1/forms/{form_id}/versions/1", headers=api.admin.headers)
    assert still.json()["hash"] == spec["hash"]


async def test_type_change_needs_force_and_diff_names_it(api: Api) -> None:
    form_id = unique("typed_")
    await upload(api, visit_form(form_id, "1"))
    await publish(api, form_id)
    await upload(api, visit_form(form_id, "2", age_type="date"))
    refused = assert_problem(await publish(api, form_id), 409, "incompatible_change")
    assert refused["errors"][0]["path"] == "/data/age"
    assert (await publish(api, form_id, force=True)).status_code == 201
    diff = (
        await api.http.get(f"/api/v1/forms/{form_id}/versions/1/diff/2", headers=api.admin.headers)
    ).json()
    assert diff["type_changed"] == [{"path": "/data/age", "before": "integer", "after": "date"}]


async def test_device_list_is_role_filtered_with_etag(api: Api) -> None:
    inspector = await api.user_session("inspector")
    trainer = await api.user_session("trainer")
    listed = await api.http.get("/api/v1/forms", headers=inspector.headers)
    ids = {f["form_id"] for f in listed.json()}
    assert {"inspection", "tip_intake"} <= ids and "training_session" not in ids
    item = next(f for f in listed.json() if f["form_id"] == "inspection")
    assert item["spec_url"] == f"/api/v1/forms/inspection/versions/{item['version']}"
    assert item["entity_lists"] == ["establishments"]
    assert "training_session" in {
        f["form_id"] for f in (await api.http.get("/api/v1/forms", headers=trainer.headers)).json()
    }
    cached = await api.http.get(
        "/api/v1/forms", headers={**inspector.headers, "If-None-Match": listed.headers["etag"]}
    )
    assert cached.status_code == 304
    # A trainer may not download the inspection form.
    denied = await api.http.get(item["spec_url"], headers=trainer.headers)
    assert_problem(denied, 404, "form_unknown")


async def test_closing_hides_and_closed_refuses(api: Api) -> None:
    form_id = unique("closing_")
    await upload(api, visit_form(form_id))
    await publish(api, form_id)
    patch = await api.http.patch(
        f"/api/v1/forms/{form_id}", json={"state": "closing"}, headers=api.admin.headers
    )
    assert patch.json()["state"] == "closing"
    assert form_id not in {
        f["form_id"]
        for f in (await api.http.get("/api/v1/forms", headers=api.admin.headers)).json()
    }
    from server.auth import Principal
    from server.services.forms import accepting_spec

    admin = Principal(
        user_id=api.admin.user["id"],
        username=api.admin.user["username"],
        role="admin",
        wards=("*",),
        device_id=api.admin.device_id,
    )
    assert (await accepting_spec(admin, form_id, "1")).form_id == form_id
    await api.http.patch(
        f"/api/v1/forms/{form_id}", json={"state": "closed"}, headers=api.admin.headers
    )
    from server.errors import Conflict

    with pytest.raises(Conflict) as refused:
        await accepting_spec(admin, form_id, "1")
    assert refused.value.instance_code == "form_closed"
    assert_problem(
        await api.http.patch(
            f"/api/v1/forms/{form_id}", json={"state": "gone"}, headers=api.admin.headers
        ),
        400,
        "validation_failed",
    )


async def test_validate_endpoint(api: Api) -> None:
    form_id = unique("val_")
    await upload(api, visit_form(form_id))
    await publish(api, form_id)
    url = f"/api/v1/forms/{form_id}/versions/1/validate"
    good = await api.http.post(
        url,
        json={"data": {"ward_code": "00070", "age": 30, "consent": "yes"}},
        headers=api.admin.headers,
    )
    assert good.status_code == 200 and good.json()["valid"] is True, good.text
    bad = await api.http.post(
        url,
        json={"data": {"ward_code": "00070", "age": 130, "consent": "no"}},
        headers=api.admin.headers,
    )
    result = bad.json()
    assert result["valid"] is False
    by_path = {e["path"]: e for e in result["errors"]}
    assert by_path["/data/age"]["message"] == "Tuổi 0-120"
    assert "/data/reason" in by_path  # required because consent = 'no' made it relevant
    unknown = await api.http.post(
        f"/api/v1/forms/{form_id}/versions/9/validate", json={"data": {}}, headers=api.admin.headers
    )
    assert_problem(unknown, 404, "form_version_unknown")
    assert_problem(
        await api.http.post(
            "/api/v1/forms/nope/versions/1/validate", json={"data": {}}, headers=api.admin.headers
        ),
        404,
        "form_unknown",
    )


async def test_validate_judges_today_in_the_forms_time_zone(api: Api) -> None:
    """Kiritimati (UTC+14) is always one or two dates ahead of UTC-12: whatever the hour, its
    today is in the future there, so only the form's own zone can explain both answers."""
    answer = {"d": datetime.now(ZoneInfo("Pacific/Kiritimati")).date().isoformat()}
    valid = {}
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12"):
        form_id = unique("tz_")
        survey = [q("date", "d", constraint=". <= today()")]
        await api.publish_xlsform(xlsform(survey, form_id=form_id, settings={"time_zone": zone}))
        response = await api.http.post(
            f"/api/v1/forms/{form_id}/versions/1/validate",
            json={"data": answer},
            headers=api.admin.headers,
        )
        assert response.status_code == 200, response.text
        valid[zone] = response.json()["valid"]
    assert valid == {"Pacific/Kiritimati": True, "Etc/GMT+12": False}


async def test_an_unknown_time_zone_is_refused_naming_its_cell(api: Api) -> None:
    forms_before = await Form.count()
    workbook = xlsform(
        [q("date", "d")], form_id=unique("tz_"), settings={"time_zone": "Asia/Hanoi"}
    )
    problem = assert_problem(await upload(api, workbook), 400, "xlsform_invalid")
    [issue] = problem["errors"]
    assert (issue["path"], issue["code"]) == ("settings/2/E", "xlsform_invalid")
    assert "The time_zone 'Asia/Hanoi' is not a time zone name" in issue["message"]
    assert await Form.count() == forms_before


@pytest.mark.parametrize(
    ("content", "filename", "status", "code"),
    [
        (b"this is not a spreadsheet", "form.xlsx", 400, "xlsform_invalid"),
        (
            xlsform([q("text", "a", "A")], sheet_name="questions"),
            "form.xlsx",
            400,
            "xlsform_invalid",
        ),
        (
            xlsform([q("text", "a", "A"), q("integer", "a", "A again")]),
            "form.xlsx",
            400,
            "xlsform_invalid",
        ),
        (xlsform([q("select_one missing", "a", "A")]), "form.xlsx", 400, "xlsform_invalid"),
        (
            xlsform([q("integer", "a", "A", constraint=". >> 3 (")]),
            "form.xlsx",
            400,
            "xlsform_invalid",
        ),
        (b"x" * (20 * 1024 * 1024), "big.xlsx", 413, "payload_too_large"),
    ],
    ids=["not-xlsx", "no-survey", "duplicate-name", "missing-choices", "bad-expression", "20MB"],
)
async def test_bad_uploads_are_clear_and_store_nothing(
    api: Api, content: bytes, filename: str, status: int, code: str
) -> None:
    forms_before, versions_before = await Form.count(), await FormVersion.count()
    problem = assert_problem(await upload(api, content, filename), status, code)
    if status == 400:
        assert problem["errors"], problem
        assert all(e["message"] for e in problem["errors"])
    assert (await Form.count(), await FormVersion.count()) == (forms_before, versions_before)


def undeclared_list_form(form_id: str) -> bytes:
    """An entity update whose record is typed in: the list its entity block reads is never
    declared, so ODK Collect cannot load the form (the programme's forms before issue 12)."""
    return xlsform(
        [q("text", "existing", required="yes"), q("text", "note", save_to="note")],
        form_id=form_id,
        entities=[
            {
                "list_name": "people",
                "label": "${note}",
                "update_if": "true()",
                "entity_id": "${existing}",
            }
        ],
    )


async def test_a_form_odk_collect_cannot_load_is_refused_with_javarosas_message(api: Api) -> None:
    if java_runtime() is None:
        pytest.skip(
            "no Java runtime, so no ODK Validate: `make test` installs default-jre-headless"
        )
    forms_before, versions_before = await Form.count(), await FormVersion.count()

    response = await upload(api, undeclared_list_form(unique("undeclared_")))

    problem = assert_problem(response, 400, "xform_invalid")
    assert "Instance referenced by instance(people)" in problem["detail"]
    [item] = problem["errors"]
    assert (item["path"], item["code"]) == ("file", "xform_invalid")
    assert "instance(people)" in item["message"] and "\tat " not in item["message"]
    assert (await Form.count(), await FormVersion.count()) == (forms_before, versions_before)

    checked = await upload(api, visit_form(unique("checked_")))
    assert checked.status_code == 201, checked.text
    assert not any("ODK Validate" in w for w in checked.json()["draft"]["warnings"])


async def test_without_java_a_form_is_kept_and_says_it_was_not_checked(
    api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java there
    form_id = unique("unchecked_")

    response = await upload(api, undeclared_list_form(form_id))

    assert response.status_code == 201, response.text
    assert response.json()["draft"]["warnings"] == [
        "Not checked with ODK Validate (JavaRosa): no Java runtime is installed."
    ]
    assert (await publish(api, form_id)).status_code == 201


async def test_duplicate_name_error_names_sheet_and_row(api: Api) -> None:
    problem = (
        await upload(api, xlsform([q("text", "a", "A"), q("integer", "a", "A again")]))
    ).json()
    assert any(e["path"].startswith("survey/") for e in problem["errors"]), problem


async def test_publish_without_draft_and_non_admin(api: Api) -> None:
    assert_problem(await publish(api, "inspection"), 409, "no_draft")
    assert_problem(await publish(api, "no_such_form"), 404, "form_unknown")
    worker = await api.user_session("inspector")
    refused = await api.http.post(
        "/api/v1/forms", files={"file": ("f.xlsx", b"x", XLSX)}, headers=worker.headers
    )
    assert_problem(refused, 403, "role_forbidden")


async def test_programme_forms_are_published_on_a_fresh_database(api: Api) -> None:
    forms = (await api.http.get("/api/v1/forms/admin", headers=api.admin.headers)).json()
    ids = {f["form_id"] for f in forms if f["current_version"]}
    assert {
        "inspection",
        "training_session",
        "training_attendance",
        "outreach_contact",
        "communication_event",
        "tip_intake",
    } <= ids


async def test_a_decompression_bomb_is_413_and_stores_nothing(api: Api) -> None:
    # Just past the limit: 32 MiB of whitespace deflates to a few tens of KB.
    padding = b" " * (MAX_XLSX_UNPACKED_BYTES + 1)
    bomb = with_first_sheet_edited(
        INSPECTION.read_bytes(), b"<sheetData>", b"<sheetData>" + padding
    )
    forms_before, versions_before = await Form.count(), await FormVersion.count()

    problem = assert_problem(await upload(api, bomb, "inspection.xlsx"), 413, "xlsform_too_large")

    assert "32 MiB" in problem["detail"]
    assert (await Form.count(), await FormVersion.count()) == (forms_before, versions_before)


async def test_health_answers_while_a_large_form_parses(api: Api) -> None:
    # 5,000 choices: legal, and a couple of seconds of parsing on this machine.
    choices = [("big", f"c{i}", f"Lựa chọn {i}") for i in range(5000)]
    big = xlsform([q("select_one big", "pick", "Chọn")], choices, form_id=unique("big"))
    uploading = asyncio.create_task(upload(api, big, "big.xlsx"))

    await asyncio.sleep(0.3)  # the upload is being parsed by now
    live = await api.http.get("/health/live")
    answered = time.monotonic()
    uploaded = await uploading
    finished = time.monotonic()

    assert live.status_code == 200
    assert uploaded.status_code == 201, uploaded.text
    # Blocked by the parse, /health/live would answer only once it is over: just before the
    # upload's own answer (its draft is saved in a few milliseconds).
    assert finished - answered > 0.5
