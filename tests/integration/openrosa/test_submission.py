"""POST /submission as ODK Collect sends it (odk.md §9, §10, §12), through the same sync core as
a native push: files over several POSTs, resends, edits, offline entity updates and the
conflicts they make, and the bad input a server on the internet receives."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server.db.json_columns import from_json
from server.db.tables_sync import Submission
from tests.conftest import Backend
from tests.helpers import BA_DINH, HOAN_KIEM, PASSWORD, Api, Session
from tests.integration.openrosa.collect import Collect, basic, collect_for
from tests.integration.openrosa.submitting import (
    Instance,
    Part,
    Sender,
    message_of,
    multipart,
    photo,
)
from tests.integration.sync.helpers import Device
from tests.unit.forms.xlsforms import q, xlsform

pytestmark = pytest.mark.db

PHOTOS = ("front.jpg", "inside.jpg", "licence.jpg")
_published: dict[tuple[str, str], str] = {}


async def visit_form(api: Api, db: Backend, kind: str = "visit") -> str:
    """An establishment visit (three photos, an `end` time, an entity block on the programme's
    `establishments` list: risk_class is a `manual` property), published once per backend."""
    key = (db.name, kind)
    if key not in _published:
        form_id = f"collect_{kind}_{uuid.uuid4().hex[:8]}"
        survey = [
            q("end", "end"),
            q("text", "ward_code", required="yes", save_to="ward_code"),
            q("select_one_from_file establishments.csv", "establishment"),
            q("text", "est_name", required="yes", save_to="business_name"),
            q("select_one risk", "risk_class", save_to="risk_class"),
            q("integer", "beds", constraint=". < 100"),
            q("image", "photo_front"),
            q("image", "photo_inside"),
            q("image", "photo_licence"),
        ]
        choices = [("risk", "low", "Thấp"), ("risk", "medium", "Vừa"), ("risk", "high", "Cao")]
        entities = [
            {
                "list_name": "establishments",
                "label": "${est_name}",
                "create_if": "${establishment} = ''",
                "update_if": "${establishment} != ''",
                "entity_id": "coalesce(${establishment}, uuid())",
            }
        ]
        await api.publish_xlsform(xlsform(survey, choices, form_id=form_id, entities=entities))
        _published[key] = form_id
    return _published[key]


def visit(
    form_id: str,
    *,
    ward: str = HOAN_KIEM,
    name: str = "Karaoke Hoa Mai",
    risk: str = "low",
    entity: dict[str, str] | None = None,
    photos: tuple[str, ...] = PHOTOS,
    **answers: Any,
) -> Instance:
    entity_id = (entity or {}).get("id", str(uuid.uuid4()))
    block = entity or {
        "dataset": "establishments",
        "create": "1",
        "update": "0",
        "baseVersion": "",
        "trunkVersion": "",
        "branchId": "",
        "id": entity_id,
    }
    slots = dict(zip(("photo_front", "photo_inside", "photo_licence"), photos, strict=False))
    values = {
        "end": "2026-02-20T10:03:59.120+07:00",
        "ward_code": ward,
        "establishment": "" if block.get("create") == "1" else entity_id,
        "est_name": name,
        "risk_class": risk,
        "beds": 12,
        **slots,
        **answers,
    }
    order = (
        "end",
        "ward_code",
        "establishment",
        "est_name",
        "risk_class",
        "beds",
        "photo_front",
        "photo_inside",
        "photo_licence",
    )
    return Instance(
        form_id=form_id,
        version="1",
        answers=[(n, values.get(n)) for n in order],
        entity={**block, "label": name},
        files={p: photo(p + entity_id) for p in photos},
    )


async def inspector(api: Api, ward: str = HOAN_KIEM) -> tuple[dict[str, Any], Sender]:
    """An inspector's tablet, configured with an app-user token URL."""
    user = await api.create_user("inspector", [ward])
    return user, Sender(await collect_for(api, user))


async def supervisor(api: Api, ward: str = HOAN_KIEM) -> Session:
    return await api.user_session("supervisor", [ward])


async def files_of(api: Api, viewer: Session, instance_id: str) -> dict[str, Any]:
    response = await api.http.get(
        f"/api/v1/submissions/{instance_id}/attachments", headers=viewer.headers
    )
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


async def stored(instance_id: str) -> list[dict[str, Any]]:
    return await Submission.select().where(Submission.instance_id == instance_id)


def created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert response.headers["x-openrosa-version"] == "1.0"
    assert response.headers["cache-control"] == "no-store"
    return message_of(response)


def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/xml"), response.headers
    return message_of(response)


# ---- files over several POSTs, resends ----------------------------------------------------------


async def test_three_photos_split_across_two_posts_complete_one_submission(
    api: Api, db: Backend
) -> None:
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    head = await tablet.head()
    assert head.status_code == 204 and head.content == b""
    assert (
        int(head.headers["x-openrosa-accept-content-length"]) == api.settings.max_submission_bytes
    )
    instance = visit(form_id)

    first = await tablet.submit(instance, files=list(PHOTOS[:2]), incomplete=True)
    assert "2 of 3 files received" in created(first)
    boss = await supervisor(api)
    status = await files_of(api, boss, instance.instance_id)
    assert (status["expected"], status["received"], status["missing_files"]) == (
        3,
        2,
        ["licence.jpg"],
    )

    second = await tablet.submit(instance, files=[PHOTOS[2]])
    assert "3 of 3 files received" in created(second)
    status = await files_of(api, boss, instance.instance_id)
    assert (status["expected"], status["received"], status["missing"]) == (3, 3, [])
    assert "missing_files" not in status
    [row] = await stored(instance.instance_id)
    assert (row["status"], row["form_id"], row["ward_code"]) == ("accepted", form_id, HOAN_KIEM)
    assert row["xml_sha256"] == hashlib.sha256(instance.xml()).hexdigest()
    envelope = from_json(row["envelope"])
    assert envelope["device_id"] == tablet.device_id
    assert envelope["user_agent"].startswith("org.odk.collect.android/")
    data = from_json(row["data"])
    assert (data["beds"], data["photo_licence"]) == (12, "licence.jpg")  # as a push carries it
    sha = hashlib.sha256(instance.files["licence.jpg"]).hexdigest()
    download = await api.http.get(f"/api/v1/blobs/{sha}", headers=boss.headers)
    assert download.status_code == 200 and download.content == instance.files["licence.jpg"]


async def test_an_identical_resend_answers_201_and_stores_nothing_twice(
    api: Api, db: Backend
) -> None:
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    instance = visit(form_id)
    created(await tablet.submit(instance))
    # The 201 was lost to a timeout: Collect sends everything again, from the first batch.
    again = created(await tablet.submit(instance))
    assert "3 of 3 files received" in again
    assert len(await stored(instance.instance_id)) == 1

    changed = Instance(**{**instance.__dict__, "answers": [*instance.answers[:-1], ("beds", 13)]})
    conflict = refused(await tablet.submit(changed), 409)
    assert "different XML" in conflict
    assert len(await stored(instance.instance_id)) == 1


async def test_a_file_part_the_xml_does_not_name_is_ignored_and_reported(
    api: Api, db: Backend
) -> None:
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    instance = visit(form_id, photos=("ảnh mặt tiền.jpg",))  # raw UTF-8 in the part headers
    stray = Part("selfie.jpg", photo("selfie"), filename="selfie.jpg", content_type="image/jpeg")
    message = created(await tablet.submit(instance, extra=[stray]))
    assert "1 of 1 files received" in message
    assert "selfie.jpg" in message
    boss = await supervisor(api)
    assert (await files_of(api, boss, instance.instance_id))["received"] == 1


# ---- edits -----------------------------------------------------------------------------------


async def test_an_edit_replaces_the_submission_and_keeps_its_files(api: Api, db: Backend) -> None:
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    original = visit(form_id)
    created(await tablet.submit(original))
    edit = original.edited(beds=20)
    created(await tablet.submit(edit, files=[]))  # the photos are not sent again
    [row] = await stored(edit.instance_id)
    assert (row["deprecated_id"], from_json(row["data"])["beds"]) == (original.instance_id, 20)
    boss = await supervisor(api)
    status = await files_of(api, boss, edit.instance_id)
    assert (status["expected"], status["received"]) == (3, 3)  # carried over by name

    stale = original.edited(beds=30)  # another edit of the original, from an older copy
    assert "edited already" in refused(await tablet.submit(stale, files=[]), 409)
    unknown = visit(form_id).edited()
    assert "does not have" in refused(await tablet.submit(unknown, files=[]), 404)


# ---- entities --------------------------------------------------------------------------------


async def test_an_update_from_an_older_base_makes_the_conflict_a_native_push_makes(
    api: Api, db: Backend
) -> None:
    """The same story twice, once with ODK Collect doing the second edit and once with a
    native device: both record the same conflict, and native devices pull the same entity."""
    form_id = await visit_form(api, db)
    boss = await supervisor(api)
    stories = []
    for editor in ("collect", "native"):
        _, tablet = await inspector(api)
        rival = Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))
        original = visit(form_id, risk="low")
        entity_id = original.entity["id"]  # type: ignore[index]
        created(await tablet.submit(original))
        # A native device edits the name and the risk class from version 1...
        renamed = {"business_name": "Karaoke Hoa Hồng", "risk_class": "medium"}
        pushed = await rival.push(
            native_update(
                rival,
                form_id,
                entity_id,
                1,
                renamed,
                {"business_name": "Karaoke Hoa Mai", "risk_class": "low"},
            )
        )
        assert pushed.json()["results"][0]["entities"][0]["status"] == "applied"
        # ...while the tablet, offline, saw version 1 and judged the risk high; its form sends
        # the name it was shown, unchanged.
        if editor == "collect":
            update = visit(
                form_id,
                risk="high",
                entity={
                    "dataset": "establishments",
                    "create": "0",
                    "update": "1",
                    "baseVersion": "1",
                    "trunkVersion": "1",
                    "branchId": str(uuid.uuid4()),
                    "id": entity_id,
                },
                photos=(),
            )
            message = created(await tablet.submit(update))
            assert "Not applied" not in message
        else:
            other = Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))
            result = await other.push(
                native_update(
                    other,
                    form_id,
                    entity_id,
                    1,
                    {"business_name": "Karaoke Hoa Mai", "risk_class": "high"},
                    {"business_name": "Karaoke Hoa Mai", "risk_class": "low"},
                )
            )
            assert result.json()["results"][0]["entities"][0]["status"] == "conflict"
        conflicts = await conflicts_of(api, boss, entity_id)
        watcher = Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))
        await watcher.pull_all()
        stories.append((conflicts, watcher.store[entity_id]))

    (collect_conflicts, collect_entity), (native_conflicts, native_entity) = stories
    assert collect_conflicts == native_conflicts
    [conflict] = collect_conflicts
    assert conflict["kind"] == "concurrent_update" and conflict["property"] == "risk_class"
    assert (conflict["status"], conflict["base"]) == ("open", "low")
    assert sorted(c["value"] for c in conflict["candidates"]) == ["high", "medium"]
    for entity in (collect_entity, native_entity):
        # The name the tablet was shown is not an edit: the native rename stands.
        assert entity["properties"]["business_name"] == "Karaoke Hoa Hồng"
        assert (entity["version"], entity["conflicted"]) == (3, ["risk_class"])


def native_update(
    device: Device,
    form_id: str,
    entity_id: str,
    base: int,
    properties: dict[str, Any],
    base_properties: dict[str, Any],
) -> dict[str, Any]:
    op = device.submission(
        form_id,
        HOAN_KIEM,
        {
            "ward_code": HOAN_KIEM,
            "establishment": entity_id,
            "est_name": properties["business_name"],
        },
    )
    op["submission"]["entities"] = [
        {
            "list": "establishments",
            "entity_id": entity_id,
            "action": "update",
            "base_version": base,
            "properties": properties,
            "base_properties": base_properties,
        }
    ]
    return op


async def conflicts_of(api: Api, viewer: Session, entity_id: str) -> list[dict[str, Any]]:
    response = await api.http.get("/api/v1/conflicts", headers=viewer.headers)
    assert response.status_code == 200, response.text
    keep = ("kind", "status", "property", "base", "chosen", "version")
    return [
        {
            **{k: c[k] for k in keep},
            "candidates": sorted(
                ({"value": x["value"], "at_version": x["at_version"]} for x in c["candidates"]),
                key=lambda x: str(x["value"]),
            ),
        }
        for c in response.json()
        if c["entity_id"] == entity_id
    ]


async def test_offline_edits_of_one_branch_follow_each_other_without_conflict(
    api: Api, db: Backend
) -> None:
    """Two offline edits of an entity downloaded at version 1 arrive as (base 1, trunk 1, B)
    and (base 2, trunk 1, B): the second is the device's own continuation, not a rival."""
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    original = visit(form_id, risk="low")
    entity_id = original.entity["id"]  # type: ignore[index]
    created(await tablet.submit(original))
    branch = str(uuid.uuid4())
    for base, risk in (("1", "medium"), ("2", "high")):
        block = {
            "dataset": "establishments",
            "create": "0",
            "update": "1",
            "baseVersion": base,
            "trunkVersion": "1",
            "branchId": branch,
            "id": entity_id,
        }
        message = created(await tablet.submit(visit(form_id, risk=risk, entity=block, photos=())))
        assert "Not applied" not in message
    boss = await supervisor(api)
    assert await conflicts_of(api, boss, entity_id) == []
    watcher = Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))
    await watcher.pull_all()
    assert watcher.store[entity_id]["properties"]["risk_class"] == "high"
    assert watcher.store[entity_id]["version"] == 3


async def test_a_refused_entity_change_is_reported_to_the_device(api: Api, db: Backend) -> None:
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    block = {
        "dataset": "establishments",
        "create": "0",
        "update": "1",
        "baseVersion": "3",
        "trunkVersion": "3",
        "branchId": "",
        "id": str(uuid.uuid4()),
    }
    instance = visit(form_id, entity=block, photos=())
    message = created(await tablet.submit(instance))  # the submission itself is kept
    assert f"Not applied: establishments {block['id']}" in message
    assert len(await stored(instance.instance_id)) == 1


# ---- encrypted forms ----------------------------------------------------------------------------


async def test_an_encrypted_envelope_is_stored_as_received(api: Api, db: Backend) -> None:
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    instance_id = str(uuid.uuid4())
    manifest = (
        f'<data id="{form_id}" version="1" encrypted="yes" '
        'xmlns="http://www.opendatakit.org/xforms/encrypted">'
        "<base64EncryptedKey>pFT0+tIo8l10==</base64EncryptedKey>"
        '<orx:meta xmlns:orx="http://openrosa.org/xforms">'
        f"<orx:instanceID>uuid:{instance_id}</orx:instanceID></orx:meta>"
        "<media><file>1561432508817.jpg.enc</file></media>"
        "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>"
        "<base64EncryptedElementSignature>UHIobs8l==</base64EncryptedElementSignature></data>"
    ).encode()
    parts = [
        Part("xml_submission_file", manifest, filename="submission.xml", content_type="text/xml"),
        Part("1561432508817.jpg.enc", b"\x13ciphertext", filename="1561432508817.jpg.enc"),
        Part("submission.xml.enc", b"\x42ciphertext", filename="submission.xml.enc"),
    ]
    message = created(await tablet.post(parts))
    assert "2 of 2 files received" in message
    [row] = await stored(instance_id)
    assert row["xml_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert from_json(row["envelope"])["encrypted"]["key"] == "pFT0+tIo8l10=="


# ---- who may submit -----------------------------------------------------------------------------


async def test_http_basic_is_challenged_then_accepted(api: Api, db: Backend) -> None:
    form_id = await visit_form(api, db)
    user = await api.create_user("inspector", [HOAN_KIEM])
    public = api.settings.public_base_url
    anonymous = Sender(Collect(api.http, public, public + "/collect"))
    challenge = await anonymous.submit(visit(form_id))
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"].startswith("Basic")
    signed_in = Collect(
        api.http, public, public + "/collect", authorization=basic(user["username"], PASSWORD)
    )
    created(await Sender(signed_in).submit(visit(form_id)))


async def test_a_ward_outside_the_workers_wards_is_refused(api: Api, db: Backend) -> None:
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api, HOAN_KIEM)
    instance = visit(form_id, ward=BA_DINH)
    assert BA_DINH in refused(await tablet.submit(instance), 403)
    assert await stored(instance.instance_id) == []


# ---- bad input ---------------------------------------------------------------------------------

BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE data [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b'<data id="x" version="1"><ward_code>&c;</ward_code></data>'
)


def xml_part(xml: bytes) -> Part:
    return Part("xml_submission_file", xml, filename="x.xml", content_type="text/xml")


@pytest.mark.parametrize(
    ("case", "status", "says"),
    [
        ("bomb", 400, "DTD"),
        ("no instanceID", 400, "instanceID"),
        ("not xml", 400, "well-formed"),
        ("unknown form", 404, "no form"),
        ("unknown version", 404, "no published version"),
        ("no xml part", 400, "xml_submission_file"),
        ("broken multipart", 400, "malformed"),
        ("breaks a rule", 400, "beds"),
    ],
)
async def test_bad_submissions_are_refused_with_a_reason(
    api: Api, db: Backend, case: str, status: int, says: str
) -> None:
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    good = visit(form_id)
    xml = good.xml()
    parts: list[Part] = {
        "bomb": [xml_part(BOMB)],
        "no instanceID": [
            xml_part(
                xml.replace(b"<orx:instanceID>", b"<orx:other>").replace(
                    b"</orx:instanceID>", b"</orx:other>"
                )
            )
        ],
        "not xml": [xml_part(b"<data id='x'><unclosed>")],
        "unknown form": [xml_part(xml.replace(f'id="{form_id}"'.encode(), b'id="no_such_form"'))],
        "unknown version": [xml_part(xml.replace(b'version="1"', b'version="999"'))],
        "no xml part": [
            Part("front.jpg", photo("x"), filename="front.jpg", content_type="image/jpeg")
        ],
        "broken multipart": [],
        "breaks a rule": [xml_part(visit(form_id, beds=150).xml())],
    }[case]
    if case == "broken multipart":
        response = await tablet.post(
            [], headers={"Content-Type": "multipart/form-data; boundary=abc"}
        )
    else:
        response = await tablet.post(parts)
    assert says in refused(response, status)
    assert await stored(good.instance_id) == []


async def test_a_closed_form_refuses_submissions(api: Api, db: Backend) -> None:
    form_id = await visit_form(api, db, "closing")
    _, tablet = await inspector(api)
    closed = await api.http.patch(
        f"/api/v1/forms/{form_id}", json={"state": "closed"}, headers=api.admin.headers
    )
    assert closed.status_code == 200, closed.text
    assert "closed" in refused(await tablet.submit(visit(form_id)), 409)


async def test_an_oversized_body_is_refused_before_it_is_read(api: Api, db: Backend) -> None:
    _, tablet = await inspector(api)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:
            sent += 65536
            yield b"x" * 65536

    response = await api.http.post(
        tablet.submission_url,
        content=endless(),
        headers=tablet.headers(
            {
                "Content-Type": "multipart/form-data; boundary=abc",
                "Content-Length": str(api.settings.max_submission_bytes + 1),
            }
        ),
    )
    assert "at most" in refused(response, 413)
    assert sent <= 65536  # at most the chunk the transport read ahead


async def test_a_body_that_is_not_multipart_is_refused(api: Api, db: Backend) -> None:
    _, tablet = await inspector(api)
    response = await api.http.post(
        tablet.submission_url,
        content=b"<data/>",
        headers=tablet.headers({"Content-Type": "text/xml"}),
    )
    refused(response, 415)
    missing = await api.http.post(
        tablet.submission_url,
        content=b"",
        headers={"Content-Type": "multipart/form-data; boundary=abc"},
    )
    assert "X-OpenRosa-Version" in refused(missing, 400)


async def test_today_is_the_day_the_form_was_filled_in_the_forms_time_zone(
    api: Api, db: Backend
) -> None:
    """`today()` is judged when Collect says the form was completed (its `end`), in the form's
    zone: a visit dated 20 February and completed at 06:30 in Hanoi (23:30 UTC the day before)
    passes `. = today()`, months after, whatever the server's clock says."""
    key = (db.name, "dated")
    if key not in _published:
        form_id = f"collect_dated_{uuid.uuid4().hex[:8]}"
        survey = [
            q("end", "end"),
            q("text", "ward_code"),
            q("date", "visit_date", constraint=". = today()"),
        ]
        await api.publish_xlsform(xlsform(survey, form_id=form_id))
        _published[key] = form_id
    form_id = _published[key]
    _, tablet = await inspector(api)

    def dated(end: str) -> Instance:
        answers = [("end", end), ("ward_code", HOAN_KIEM), ("visit_date", "2026-02-20")]
        return Instance(form_id=form_id, version="1", answers=answers)

    created(await tablet.submit(dated("2026-02-20T06:30:00.000+07:00")))
    late = refused(await tablet.submit(dated("2026-02-21T06:30:00.000+07:00")), 400)
    assert "visit_date" in late


async def test_a_chunked_body_without_content_length_is_read_too(api: Api, db: Backend) -> None:
    """OpenRosa servers must accept chunked POSTs (odk.md §12); the body arrives in pieces."""
    form_id = await visit_form(api, db)
    _, tablet = await inspector(api)
    instance = visit(form_id)
    boundary = str(uuid.uuid4())
    parts = [
        Part("xml_submission_file", instance.xml(), filename="v.xml", content_type="text/xml"),
        *[
            Part(n, data, filename=n, content_type="image/jpeg")
            for n, data in instance.files.items()
        ],
    ]
    body = multipart(parts, boundary)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4093):
            yield body[start : start + 4093]

    response = await api.http.post(
        tablet.submission_url,
        content=pieces(),
        headers=tablet.headers({"Content-Type": f"multipart/form-data; boundary={boundary}"}),
    )
    assert "content-length" not in response.request.headers
    assert "3 of 3 files received" in created(response)
