"""One push carrying several ops on the same records: push reads its entities once and merges the
ops in memory, so each op must still see the ones before it (versions, natural keys, wards) and a
`resolve` op in the middle must not leave a stale copy behind."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from server.db.tables_sync import ConflictRow, Entity, Submission
from tests.helpers import BA_DINH, HOAN_KIEM, Api
from tests.integration.sync.helpers import Device
from tests.ops import hlc

pytestmark = pytest.mark.db

KEY = {"business_name": f"Quán {uuid.uuid4()}", "address": "3 Hàng Bạc"}


async def device(api: Api, role: str, wards: list[str]) -> Device:
    return Device(api.http, await api.user_session(role, wards))


def entity_result(response: Any, index: int) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result = response.json()["results"][index]
    assert result["status"] == "applied", result
    return result["entities"][0]  # type: ignore[no-any-return]


async def test_ops_in_one_push_see_each_other(api: Api) -> None:
    tablet = await device(api, "supervisor", [HOAN_KIEM, BA_DINH])
    first = tablet.inspection(HOAN_KIEM, properties={**KEY, "risk_class": "low"})
    e1 = first["submission"]["entities"][0]["entity_id"]
    twin = tablet.inspection(HOAN_KIEM, properties={**KEY, "risk_class": "low"})
    e2 = twin["submission"]["entities"][0]["entity_id"]

    def edit(version: int, **properties: Any) -> dict[str, Any]:
        return tablet.inspection(
            properties.get("ward_code", HOAN_KIEM),
            entity_id=e1,
            action="update",
            base_version=version,
            properties=properties,
        )

    response = await tablet.push(
        first,
        twin,  # same natural key as the create just before it, in the same push
        edit(1, result="no_violation"),
        edit(2, ward_code=BA_DINH),  # moves to another ward...
        edit(3, ward_code=HOAN_KIEM),  # ...and back, within the same push
    )
    assert entity_result(response, 0) == {
        "entity_id": e1,
        "status": "applied",
        "version": 1,
        "conflict_ids": [],
    }
    duplicate = entity_result(response, 1)
    assert duplicate["status"] == "conflict" and len(duplicate["conflict_ids"]) == 1
    assert [entity_result(response, i)["version"] for i in (2, 3, 4)] == [2, 3, 4]
    assert all(entity_result(response, i)["status"] == "applied" for i in (2, 3, 4))

    row = await Entity.select().where(Entity.entity_id == e1).first()
    assert row is not None and row["version"] == 4 and row["ward_code"] == HOAN_KIEM
    conflict = await ConflictRow.select().where(ConflictRow.entity_id == e2).first()
    assert conflict is not None and conflict["kind"] == "duplicate_candidate"
    assert conflict["id"] == duplicate["conflict_ids"][0]

    # A worker of the first ward has the entity at its last version (the two evictions the moves
    # produced do not remove it); a worker of the other ward never sees it.
    hk, bd = await device(api, "inspector", [HOAN_KIEM]), await device(api, "inspector", [BA_DINH])
    await hk.pull_all()
    await bd.pull_all()
    assert hk.store[e1]["version"] == 4
    assert hk.store[e1]["properties"]["result"] == "no_violation"
    assert e1 not in bd.store
    # A worker who already had the entity before the push keeps it too.
    follower = await device(api, "inspector", [HOAN_KIEM])
    await follower.pull_all()
    again = await tablet.push(edit(4, ward_code=BA_DINH), edit(5, ward_code=HOAN_KIEM))
    assert [entity_result(again, i)["version"] for i in (0, 1)] == [5, 6]
    await follower.pull_all()
    assert follower.store[e1]["version"] == 6


async def test_resolve_op_then_an_edit_of_the_same_entity(api: Api) -> None:
    a = await device(api, "inspector", [HOAN_KIEM])
    b = await device(api, "inspector", [HOAN_KIEM])
    supervisor = await device(api, "supervisor", [HOAN_KIEM])
    unique = {"business_name": f"Quán {uuid.uuid4()}", "risk_class": "low"}
    create = a.inspection(HOAN_KIEM, properties=unique)
    entity_id = create["submission"]["entities"][0]["entity_id"]
    await a.push(create)

    def edit(dev: Device, version: int, base: str, value: str) -> dict[str, Any]:
        return dev.inspection(
            HOAN_KIEM,
            entity_id=entity_id,
            action="update",
            base_version=version,
            properties={"risk_class": value},
            base_properties={"risk_class": base},
        )

    entity_result(await a.push(edit(a, 1, "low", "high")), 0)
    conflicted = entity_result(await b.push(edit(b, 1, "low", "medium")), 0)
    assert conflicted["status"] == "conflict"
    conflict_id = conflicted["conflict_ids"][0]
    listed = await api.http.get("/api/v1/conflicts?status=open", headers=supervisor.headers)
    record = next(c for c in listed.json() if c["id"] == conflict_id)
    choice = next(i for i, c in enumerate(record["candidates"]) if c["value"] == "medium")

    resolve = {
        "op_seq": supervisor.next_seq,
        "op_id": str(uuid.uuid4()),
        "hlc": hlc(node="sup"),
        "kind": "resolve",
        "resolve": {
            "conflict_id": conflict_id,
            "resolution_id": str(uuid.uuid4()),
            "choice": choice,
        },
    }
    supervisor.next_seq += 1
    resolved_version = conflicted["version"] + 1
    # The supervisor corrects the value right after choosing it, in the same push.
    then = edit(supervisor, resolved_version, "medium", "low")
    response = await supervisor.push(resolve, then)
    resolved = entity_result(response, 0)
    assert resolved["version"] == resolved_version and resolved["conflict_ids"] == [conflict_id]
    after = entity_result(response, 1)
    assert after == {
        "entity_id": entity_id,
        "status": "applied",
        "version": resolved_version + 1,
        "conflict_ids": [],
    }
    row = await Entity.select().where(Entity.entity_id == entity_id).first()
    assert row is not None and row["version"] == resolved_version + 1
    await a.pull_all()
    assert a.store[entity_id]["properties"]["risk_class"] == "low"
    assert a.store[entity_id]["conflicted"] == []


async def test_two_devices_racing_with_one_submission_store_it_once(api: Api) -> None:
    """The same submission (a shared outbox export, say) pushed by two devices at the same moment:
    one accepted row and one entity; the loser of the race answers 503 and its retry is a no-op."""
    a = await device(api, "inspector", [HOAN_KIEM])
    b = await device(api, "inspector", [HOAN_KIEM])
    for _ in range(5):
        op_a = a.inspection(HOAN_KIEM, properties={"business_name": f"Quán {uuid.uuid4()}"})
        op_b = {**b.inspection(HOAN_KIEM), "submission": op_a["submission"]}
        responses = await asyncio.gather(a.push(op_a), b.push(op_b))
        for dev, op, response in zip((a, b), (op_a, op_b), responses, strict=True):
            while response.status_code == 503:
                assert response.json()["code"] == "concurrent_write"
                assert response.headers["retry-after"]
                response = await dev.push(op)
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["status"] == "applied"
        instance_id = op_a["submission"]["instance_id"]
        rows = await Submission.select(Submission.status).where(
            Submission.instance_id == instance_id
        )
        assert [r["status"] for r in rows] == ["accepted"]
        entity_id = op_a["submission"]["entities"][0]["entity_id"]
        assert await Entity.count().where(Entity.entity_id == entity_id) == 1
