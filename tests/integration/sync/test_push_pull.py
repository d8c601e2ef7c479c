"""Push and pull over HTTP on both databases: exactly-once, gaps, scope, conflicts, bad input."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

from server.db.tables_sync import Submission
from tests.helpers import BA_DINH, HOAN_KIEM, PASSWORD, Api, assert_problem, login
from tests.integration.sync.helpers import Device
from tests.ops import hlc

pytestmark = pytest.mark.db


async def device(api: Api, role: str = "inspector", wards: list[str] | None = None) -> Device:
    return Device(api.http, await api.user_session(role, wards or [HOAN_KIEM]))


def move(staff: Device, entity_id: str, ward: str) -> dict[str, Any]:
    """An op moving a record at version 1 to `ward`."""
    return staff.inspection(
        ward, entity_id=entity_id, action="update", base_version=1, properties={"ward_code": ward}
    )


async def test_push_creates_an_entity_and_pull_returns_it(api: Api) -> None:
    tablet = await device(api)
    op = tablet.inspection(
        HOAN_KIEM, properties={"business_name": "Karaoke Sao Mai", "kind": "karaoke"}
    )
    response = await tablet.push(op)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["last_op_seq"] == 1
    result = body["results"][0]
    assert result["status"] == "applied", result
    entity_id = op["submission"]["entities"][0]["entity_id"]
    assert result["entities"] == [
        {"entity_id": entity_id, "status": "applied", "version": 1, "conflict_ids": []}
    ]

    changes = await tablet.pull_all()
    entity = next(c for c in changes if c["type"] == "entity" and c["id"] == entity_id)
    assert entity["properties"]["business_name"] == "Karaoke Sao Mai"
    assert entity["properties"]["ward_code"] == HOAN_KIEM
    assert any(c["type"] == "form" and c["form_id"] == "inspection" for c in changes)


async def test_replays_are_duplicates_and_gaps_stop(api: Api) -> None:
    tablet = await device(api)
    first, second = tablet.inspection(HOAN_KIEM), tablet.inspection(HOAN_KIEM)
    assert (await tablet.push(first)).json()["last_op_seq"] == 1
    # The response was lost: the device sends op 1 again with op 2.
    replay = (await tablet.push(first, second)).json()
    assert [r["status"] for r in replay["results"]] == ["duplicate", "applied"]
    assert [r["original_status"] for r in replay["results"]] == ["applied", None]
    assert (
        replay["results"][0]["entities"][0]["entity_id"]
        == first["submission"]["entities"][0]["entity_id"]
    )
    assert replay["last_op_seq"] == 2
    # A gap: op 4 without op 3 is not applied; the answer says where to resend from.
    tablet.next_seq = 4
    gap = (await tablet.push(tablet.inspection(HOAN_KIEM))).json()
    assert gap["last_op_seq"] == 2 and gap["results"] == []
    count = await Submission.count().where(Submission.device_id == tablet.session.device_id)
    assert count == 2


@pytest.mark.parametrize("role", ["outreach", "trainer"])
async def test_a_form_hidden_from_the_role_is_refused_on_push(api: Api, role: str) -> None:
    tablet = await device(api, role)
    listed = await api.http.get("/api/v1/forms", headers=tablet.headers)
    assert "inspection" not in {f["form_id"] for f in listed.json()}
    op = tablet.inspection(HOAN_KIEM)
    body = (await tablet.push(op)).json()
    result = body["results"][0]
    assert result["status"] == "rejected", result
    assert [(e["path"], e["code"]) for e in result["errors"]] == [
        ("$.submission.form_id", "form_forbidden")
    ]
    # Nothing of it applied: no establishment exists, and the op still consumed its seq.
    assert body["last_op_seq"] == 1
    entity_id = op["submission"]["entities"][0]["entity_id"]
    changes = await Device(api.http, await api.user_session("supervisor")).pull_all()
    assert entity_id not in {c["id"] for c in changes if c["type"] == "entity"}


async def test_answer_errors_name_json_paths_into_the_push_body(api: Api) -> None:
    tablet = await device(api)
    op = tablet.inspection(HOAN_KIEM, data={"kind": "spaceship", "nickname": "x"})
    result = (await tablet.push(op)).json()["results"][0]
    assert result["status"] == "rejected"
    assert {(e["path"], e["code"]) for e in result["errors"]} == {
        ("$.submission.data.kind", "unknown_choice"),
        ("$.submission.data.nickname", "unknown_field"),
    }


async def test_a_tablet_that_changes_hands_keeps_each_users_ops(api: Api) -> None:
    """The probe's takeover: A pushes op 1 on tablet D; B logs in on D and pushes op_seq 1 and 2;
    A logs in again and pushes op_seq 2. Each user's op_seq is their own on D: every op is
    applied once and no one is answered with another user's result."""
    a = await device(api)
    b_user = await api.create_user("inspector", [HOAN_KIEM])
    a_first = a.inspection(HOAN_KIEM)
    assert (await a.push(a_first)).json()["results"][0]["status"] == "applied"
    a_second = a.inspection(HOAN_KIEM)  # made offline; the tablet changes hands before it is sent

    b = Device(api.http, await login(api.http, b_user["username"], PASSWORD, a.session.device_id))
    assert_problem(await a.push(a_second), 401, "device_revoked")  # A's session ended
    b_ops = [b.inspection(HOAN_KIEM), b.inspection(HOAN_KIEM)]
    pushed = (await b.push(*b_ops)).json()
    assert [r["status"] for r in pushed["results"]] == ["applied", "applied"], pushed
    assert [r["entities"][0]["entity_id"] for r in pushed["results"]] == [
        op["submission"]["entities"][0]["entity_id"] for op in b_ops
    ]
    assert pushed["last_op_seq"] == 2

    a.session = await login(api.http, a.session.user["username"], PASSWORD, a.session.device_id)
    again = (await a.push(a_first, a_second)).json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "applied"], again
    assert [r["entities"][0]["entity_id"] for r in again["results"]] == [
        op["submission"]["entities"][0]["entity_id"] for op in (a_first, a_second)
    ]
    assert again["last_op_seq"] == 2
    stored = await Submission.select(Submission.instance_id).where(
        Submission.device_id == a.session.device_id
    )
    sent = [op["submission"]["instance_id"] for op in (a_first, a_second, *b_ops)]
    assert sorted(r["instance_id"] for r in stored) == sorted(sent)
    # Each user's pull acknowledges their own ops only.
    assert (await a.pull())["acked_through"] == 2
    b.session = await login(api.http, b_user["username"], PASSWORD, a.session.device_id)
    assert (await b.pull())["acked_through"] == 2


async def test_rejected_op_consumes_its_seq_and_keeps_the_data(api: Api) -> None:
    tablet = await device(api)
    bad = tablet.inspection(HOAN_KIEM, data={"kind": "casino"})
    unknown_version = tablet.inspection(HOAN_KIEM, form_version="1999")
    other_ward = tablet.inspection(BA_DINH)
    good = tablet.inspection(HOAN_KIEM)
    body = (await tablet.push(bad, unknown_version, other_ward, good)).json()
    assert body["last_op_seq"] == 4
    statuses = [(r["status"], [e["code"] for e in r["errors"]]) for r in body["results"]]
    assert statuses[0][0] == "rejected" and "unknown_choice" in statuses[0][1]
    assert statuses[1] == ("rejected", ["form_version_unknown"])
    assert statuses[2] == ("rejected", ["ward_forbidden"])
    assert statuses[3] == ("applied", [])
    kept = await Submission.select(Submission.status).where(
        Submission.device_id == tablet.session.device_id
    )
    assert sorted(r["status"] for r in kept) == ["accepted", "rejected", "rejected", "rejected"]
    # A replay says what each op's first application answered, errors included.
    replay = (await tablet.push(bad, unknown_version, other_ward, good)).json()
    assert [(r["status"], r["original_status"]) for r in replay["results"]] == [
        ("duplicate", "rejected"),
        ("duplicate", "rejected"),
        ("duplicate", "rejected"),
        ("duplicate", "applied"),
    ]
    assert replay["results"][1]["errors"][0]["code"] == "form_version_unknown"


async def test_instance_id_reuse(api: Api) -> None:
    tablet = await device(api)
    op = tablet.inspection(HOAN_KIEM)
    await tablet.push(op)
    same = {**op, "op_seq": 2, "op_id": str(uuid.uuid4())}
    tablet.next_seq = 3
    different = msgspec.json.decode(msgspec.json.encode(same))
    different.update(op_seq=3, op_id=str(uuid.uuid4()))
    different["submission"]["data"]["address"] = "somewhere else"
    body = (await tablet.push(same, different)).json()
    assert body["results"][0]["status"] == "applied"
    assert body["results"][1]["status"] == "rejected"
    assert body["results"][1]["errors"][0]["code"] == "instance_id_reused"


async def test_concurrent_edits_make_a_conflict_for_the_supervisor(api: Api) -> None:
    a, b = await device(api), await device(api)
    supervisor = await device(api, "supervisor")
    create = a.inspection(HOAN_KIEM, properties={"business_name": "Quán X", "risk_class": "low"})
    entity_id = create["submission"]["entities"][0]["entity_id"]
    await a.push(create)
    # Both tablets edit the same risk class from the same version 1.
    edit_a, edit_b = (
        tablet.inspection(
            HOAN_KIEM,
            entity_id=entity_id,
            action="update",
            base_version=1,
            properties={"risk_class": risk},
            base_properties={"risk_class": "low"},
        )
        for tablet, risk in ((a, "high"), (b, "medium"))
    )
    assert (await a.push(edit_a)).json()["results"][0]["entities"][0]["status"] == "applied"
    second = (await b.push(edit_b)).json()["results"][0]["entities"][0]
    assert second["status"] == "conflict" and len(second["conflict_ids"]) == 1
    conflict_id = second["conflict_ids"][0]

    listed = await api.http.get("/api/v1/conflicts?status=open", headers=supervisor.headers)
    record = next(c for c in listed.json() if c["id"] == conflict_id)
    assert record["property"] == "risk_class" and record["kind"] == "concurrent_update"
    assert sorted(c["value"] for c in record["candidates"]) == ["high", "medium"]
    # Supervisors get conflicts in pull; workers do not.
    assert any(
        c["type"] == "conflict" and c["id"] == conflict_id for c in await supervisor.pull_all()
    )
    assert not any(c["type"] == "conflict" for c in await a.pull_all())
    assert assert_problem(
        await api.http.get("/api/v1/conflicts", headers=a.headers), 403, "role_forbidden"
    )

    choice = next(i for i, c in enumerate(record["candidates"]) if c["value"] == "medium")
    resolution = {"choice": choice, "resolution_id": str(uuid.uuid4())}
    url = f"/api/v1/conflicts/{conflict_id}/resolve"
    done = await api.http.post(url, json=resolution, headers=supervisor.headers)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "resolved" and done.json()["chosen"] == "medium"
    again = await api.http.post(url, json=resolution, headers=supervisor.headers)
    assert again.status_code == 200 and again.json() == done.json()
    other = await api.http.post(
        url, json={"choice": 0, "resolution_id": str(uuid.uuid4())}, headers=supervisor.headers
    )
    assert_problem(other, 409, "stale")
    entity = next(c for c in await a.pull_all() if c.get("id") == entity_id)
    assert entity["properties"]["risk_class"] == "medium" and entity["conflicted"] == []


async def test_scope_workers_see_only_their_wards(api: Api) -> None:
    hk, bd = await device(api, wards=[HOAN_KIEM]), await device(api, wards=[BA_DINH])
    op_hk = hk.inspection(HOAN_KIEM)
    op_bd = bd.inspection(BA_DINH)
    await hk.push(op_hk)
    await bd.push(op_bd)
    seen_hk = {c["id"] for c in await hk.pull_all() if c["type"] == "entity"}
    assert op_hk["submission"]["entities"][0]["entity_id"] in seen_hk
    assert op_bd["submission"]["entities"][0]["entity_id"] not in seen_hk
    # Editing an entity of another ward is refused as if it did not exist.
    sneaky = bd.inspection(
        BA_DINH,
        entity_id=op_hk["submission"]["entities"][0]["entity_id"],
        action="update",
        base_version=1,
        properties={"risk_class": "low"},
        base_properties={"risk_class": "high"},
    )
    result = (await bd.push(sneaky)).json()["results"][0]
    assert result["entities"][0]["status"] == "rejected"


async def test_reassignment_evicts_and_backfills(api: Api) -> None:
    worker = await api.create_user("inspector", [HOAN_KIEM])
    from tests.helpers import PASSWORD, login

    session = await login(api.http, worker["username"], PASSWORD)
    tablet = Device(api.http, session)
    other = await device(api, wards=[BA_DINH])
    mine, theirs = tablet.inspection(HOAN_KIEM), other.inspection(BA_DINH)
    await tablet.push(mine)
    await other.push(theirs)
    await tablet.pull_all()
    mine_id = mine["submission"]["entities"][0]["entity_id"]
    theirs_id = theirs["submission"]["entities"][0]["entity_id"]
    assert mine_id in tablet.store and theirs_id not in tablet.store
    await api.http.patch(
        f"/api/v1/users/{worker['id']}", json={"wards": [BA_DINH]}, headers=api.admin.headers
    )
    await tablet.pull_all()
    assert mine_id not in tablet.store, "left scope: evicted"
    assert theirs_id in tablet.store, "came into scope: back-filled"


async def test_bad_input_is_a_problem_and_applies_nothing(api: Api) -> None:
    tablet = await device(api)
    op = tablet.inspection(HOAN_KIEM)
    url = "/api/v1/sync/push"
    cases = [
        (
            {"protocol": 1, "device_id": tablet.session.device_id, "ops": [{"op_seq": 1}]},
            400,
            "validation_failed",
        ),
        (
            {"protocol": 2, "device_id": tablet.session.device_id, "ops": [op]},
            400,
            "validation_failed",
        ),
        ({"protocol": 1, "device_id": str(uuid.uuid4()), "ops": [op]}, 403, "device_mismatch"),
        (
            {"protocol": 1, "device_id": tablet.session.device_id, "ops": [op] * 501},
            400,
            "validation_failed",
        ),
        (
            {
                "protocol": 1,
                "device_id": tablet.session.device_id,
                "ops": [{**op, "hlc": hlc(10 * 60_000)}],
            },
            400,
            "clock_skew",
        ),
    ]
    for body, status, code in cases:
        assert_problem(await api.http.post(url, json=body, headers=tablet.headers), status, code)
    assert_problem(
        await api.http.post(
            url,
            content=b"\x00garbage",
            headers={**tablet.headers, "content-type": "application/json"},
        ),
        400,
        "malformed_body",
    )
    assert await Submission.count().where(Submission.device_id == tablet.session.device_id) == 0
    # Cursors: tampered, and another device's.
    await tablet.pull()
    token = tablet.cursor
    assert token is not None
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    pull = "/api/v1/sync/pull"
    problem = await api.http.post(
        pull,
        json={"protocol": 1, "device_id": tablet.session.device_id, "cursor": tampered},
        headers=tablet.headers,
    )
    assert_problem(problem, 400, "cursor_invalid")
    other = await device(api)
    stolen = await api.http.post(
        pull,
        json={"protocol": 1, "device_id": other.session.device_id, "cursor": token},
        headers=other.headers,
    )
    assert_problem(stolen, 400, "cursor_device_mismatch")


async def test_msgpack_round_trip(api: Api) -> None:
    tablet = await device(api)
    body = msgspec.msgpack.encode(
        {
            "protocol": 1,
            "device_id": tablet.session.device_id,
            "ops": [tablet.inspection(HOAN_KIEM)],
        }
    )
    response = await api.http.post(
        "/api/v1/sync/push",
        content=body,
        headers={
            **tablet.headers,
            "content-type": "application/msgpack",
            "accept": "application/msgpack",
        },
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/msgpack"
    assert msgspec.msgpack.decode(response.content)["results"][0]["status"] == "applied"


async def test_acked_through(api: Api) -> None:
    tablet = await device(api)
    await tablet.push(tablet.inspection(HOAN_KIEM), tablet.inspection(HOAN_KIEM))
    first = await tablet.pull(max_items=1)
    assert first["has_more"] is True
    rest = await tablet.pull_all()
    assert rest is not None
    final = await tablet.pull()
    assert final["acked_through"] == 2


async def test_concurrent_pushes_of_one_device_apply_once(api: Api) -> None:
    import asyncio

    tablet = await device(api)
    ops = [tablet.inspection(HOAN_KIEM) for _ in range(5)]
    first, second = await asyncio.gather(tablet.push(*ops), tablet.push(*ops))
    bodies = [first.json(), second.json()]
    assert all(b["last_op_seq"] == 5 for b in bodies)
    statuses = sorted(tuple(r["status"] for r in b["results"]) for b in bodies)
    assert statuses == [("applied",) * 5, ("duplicate",) * 5]
    assert await Submission.count().where(Submission.device_id == tablet.session.device_id) == 5


async def test_acked_through_reaches_an_op_that_opened_a_conflict(api: Api) -> None:
    """Workers never receive conflict rows, so a conflict must not hold acked_through back."""
    a, b = await device(api), await device(api)
    create = a.inspection(HOAN_KIEM, properties={"business_name": "Q", "risk_class": "low"})
    entity_id = create["submission"]["entities"][0]["entity_id"]
    await a.push(create)
    edit = {
        "entity_id": entity_id,
        "action": "update",
        "base_version": 1,
        "base_properties": {"risk_class": "low"},
    }
    await a.push(a.inspection(HOAN_KIEM, properties={"risk_class": "high"}, **edit))
    second = (
        await b.push(b.inspection(HOAN_KIEM, properties={"risk_class": "medium"}, **edit))
    ).json()
    assert second["results"][0]["entities"][0]["status"] == "conflict"
    await b.pull_all()
    assert (await b.pull())["acked_through"] == 1


async def test_supervisor_sees_how_many_files_arrived(api: Api) -> None:
    import hashlib

    from server.services.blobs import record_blob

    tablet = await device(api)
    files = [hashlib.sha256(f"photo {i} {uuid.uuid4()}".encode()).hexdigest() for i in range(3)]
    attachments = [
        {"name": f"p{i}.jpg", "sha256": sha, "size": 10, "content_type": "image/jpeg"}
        for i, sha in enumerate(files)
    ]
    op = tablet.inspection(HOAN_KIEM, attachments=attachments)
    result = (await tablet.push(op)).json()["results"][0]
    assert result["missing_blobs"] == files
    await record_blob(files[0], 10, "image/jpeg", tablet.session.user["id"])
    await record_blob(files[1], 10, "image/jpeg", tablet.session.user["id"])
    url = f"/api/v1/submissions/{op['submission']['instance_id']}/attachments"
    supervisor = await device(api, "supervisor")
    status = (await api.http.get(url, headers=supervisor.headers)).json()
    assert status == {"expected": 3, "received": 2, "missing": [files[2]]}
    # A replay of the op (its response was lost) answers what is missing now, not then.
    replay = (await tablet.push(op)).json()["results"][0]
    assert replay["status"] == "duplicate" and replay["missing_blobs"] == [files[2]]
    elsewhere = await device(api, "supervisor", [BA_DINH])
    assert_problem(await api.http.get(url, headers=elsewhere.headers), 404, "submission_not_found")
    assert_problem(await api.http.get(url, headers=tablet.headers), 403, "role_forbidden")


async def test_evictions_are_paged_and_restart_when_the_scope_changes_again(api: Api) -> None:
    """Losing a ward can evict thousands of records: they come in pages like everything else, and
    a second change of scope in the middle of them still evicts everything that left."""
    from tests.helpers import PASSWORD, login

    third = "00008"
    boss = await api.create_user("supervisor", [HOAN_KIEM, BA_DINH, third])
    tablet = Device(api.http, await login(api.http, boss["username"], PASSWORD))
    hk, bd = await device(api, wards=[HOAN_KIEM]), await device(api, wards=[BA_DINH])
    twin = {"business_name": f"Quán {uuid.uuid4()}", "address": "1 Hàng Bè"}
    # 9 entities in each ward; the first two of each share a natural key: one conflict each.
    for worker, ward in ((hk, HOAN_KIEM), (bd, BA_DINH)):
        ops = [worker.inspection(ward, properties=twin) for _ in range(2)]
        ops += [worker.inspection(ward) for _ in range(7)]
        assert (await worker.push(*ops)).json()["last_op_seq"] == 9
    first = await tablet.pull_all()
    held = {c["id"]: c["properties"]["ward_code"] for c in first if c["type"] == "entity"}
    held_conflicts = {c["id"] for c in first if c["type"] == "conflict"}
    assert sorted(held.values()).count(HOAN_KIEM) >= 9 and len(held_conflicts) >= 2

    def patch(wards: list[str]) -> Any:
        return api.http.patch(
            f"/api/v1/users/{boss['id']}", json={"wards": wards}, headers=api.admin.headers
        )

    await patch([BA_DINH, third])
    page = await tablet.pull(max_items=4)
    assert page["has_more"] and len(page["changes"]) == 4
    assert all(c["evict"] for c in page["changes"])
    evicted = list(page["changes"])
    await patch([third])  # Ba Đình goes too, half-way through Hoàn Kiếm's evictions
    while True:
        page = await tablet.pull(max_items=4)
        assert len(page["changes"]) <= 4
        evicted.extend(page["changes"])
        if not page["has_more"]:
            break
    evicted_entities = {c["id"] for c in evicted if c["type"] == "entity" and c["evict"]}
    evicted_conflicts = {c["id"] for c in evicted if c["type"] == "conflict" and c["evict"]}
    gone = {i for i, ward in held.items() if ward in (HOAN_KIEM, BA_DINH)}
    assert gone <= evicted_entities
    assert held_conflicts <= evicted_conflicts
    assert not any(i in tablet.store for i in gone)
    # Evictions carry no values.
    assert all(c["candidates"] == [] for c in evicted if c["type"] == "conflict")


async def test_a_ward_given_back_during_its_evictions_is_sent_again(api: Api) -> None:
    """Half of a ward's records were evicted when the ward came back: the device must get the
    evicted half again (its cursor is back to the scope it had, yet it no longer holds them)."""
    from tests.helpers import PASSWORD, login

    worker = await api.create_user("inspector", [HOAN_KIEM, BA_DINH])
    tablet = Device(api.http, await login(api.http, worker["username"], PASSWORD))
    bd = await device(api, wards=[BA_DINH])
    ops = [bd.inspection(BA_DINH) for _ in range(8)]
    assert (await bd.push(*ops)).json()["last_op_seq"] == 8
    mine = {op["submission"]["entities"][0]["entity_id"] for op in ops}
    await tablet.pull_all()
    assert mine <= set(tablet.store)

    async def patch(wards: list[str]) -> None:
        response = await api.http.patch(
            f"/api/v1/users/{worker['id']}", json={"wards": wards}, headers=api.admin.headers
        )
        assert response.status_code == 200, response.text

    await patch([HOAN_KIEM])
    page = await tablet.pull(max_items=3)
    assert page["has_more"] and [c["evict"] for c in page["changes"]] == [True] * 3
    await patch([HOAN_KIEM, BA_DINH])  # given back before the evictions finished
    await tablet.pull_all()
    assert mine <= set(tablet.store), "records evicted before the ward came back are missing"


async def test_a_record_that_moved_out_before_the_ward_was_taken_away_is_evicted(api: Api) -> None:
    """The device holds E and F of ward A. Both move out of A, then, before the device pulls, A is
    taken from it: the device no longer reads A's part of the log, where their evictions are,
    and they are no longer in A either. E went to a ward the device does not see: evicted. F went
    to the ward the device now has: kept, at its new version."""
    from tests.helpers import PASSWORD, login

    third = "00008"
    worker = await api.create_user("inspector", [HOAN_KIEM])
    tablet = Device(api.http, await login(api.http, worker["username"], PASSWORD))
    staff = await device(api, wards=["*"])
    e_op, f_op = staff.inspection(HOAN_KIEM), staff.inspection(HOAN_KIEM)
    await staff.push(e_op, f_op)
    e = e_op["submission"]["entities"][0]["entity_id"]
    f = f_op["submission"]["entities"][0]["entity_id"]
    await tablet.pull_all()
    assert {e, f} <= set(tablet.store)
    moves = [move(staff, entity_id, ward) for entity_id, ward in ((e, BA_DINH), (f, third))]
    assert [r["status"] for r in (await staff.push(*moves)).json()["results"]] == ["applied"] * 2
    response = await api.http.patch(
        f"/api/v1/users/{worker['id']}", json={"wards": [third]}, headers=api.admin.headers
    )
    assert response.status_code == 200, response.text
    await tablet.pull_all()
    assert e not in tablet.store, "moved out of its ward, then the ward was taken: still held"
    assert tablet.store[f]["version"] == 2
    assert tablet.store[f]["properties"]["ward_code"] == third


async def test_moved_records_behind_a_full_page_of_kept_ones_are_still_evicted(api: Api) -> None:
    """Ward A is taken away after three of its records moved to a ward the device keeps and then
    three moved to a ward it never had. The kept ones' eviction rows come first in A's log and
    fill a small page without being served; the other three must still be evicted."""
    from tests.helpers import PASSWORD, login

    third = "00008"
    worker = await api.create_user("inspector", [HOAN_KIEM, BA_DINH])
    tablet = Device(api.http, await login(api.http, worker["username"], PASSWORD))
    staff = await device(api, wards=["*"])
    creates = [staff.inspection(HOAN_KIEM) for _ in range(6)]
    assert (await staff.push(*creates)).json()["last_op_seq"] == 6
    ids = [op["submission"]["entities"][0]["entity_id"] for op in creates]
    await tablet.pull_all()
    assert set(ids) <= set(tablet.store)
    for batch, ward in ((ids[:3], BA_DINH), (ids[3:], third)):
        results = (await staff.push(*[move(staff, i, ward) for i in batch])).json()["results"]
        assert [r["status"] for r in results] == ["applied"] * 3
    response = await api.http.patch(
        f"/api/v1/users/{worker['id']}", json={"wards": [BA_DINH]}, headers=api.admin.headers
    )
    assert response.status_code == 200, response.text
    while (await tablet.pull(max_items=2))["has_more"]:
        pass
    assert [i for i in ids[3:] if i in tablet.store] == [], "moved out of scope, still held"
    assert all(tablet.store[i]["properties"]["ward_code"] == BA_DINH for i in ids[:3])
