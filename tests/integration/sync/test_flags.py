"""A constraint rejects a submission only where the server decides it fails; a rule it cannot
decide is accepted and flagged, and supervisors of the submission's ward see the flag
(docs/protocol.md "Validation")."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.helpers import BA_DINH, HOAN_KIEM, Api, assert_problem, unique
from tests.integration.sync.helpers import Device
from tests.unit.forms.xlsforms import q, xlsform

pytestmark = pytest.mark.db

# The value the tablet saved last time is on the tablet only: the server can never decide this.
UNDECIDABLE = ". >= ${last-saved#visits}"


async def publish_visits_form(api: Api) -> str:
    """A form with one decidable constraint (`beds`) and one the server cannot decide (`visits`)."""
    form_id = unique("flag_")
    workbook = xlsform(
        [
            q("integer", "beds", "Số giường", constraint=". < 100"),
            q("integer", "visits", "Số lần", constraint=UNDECIDABLE),
        ],
        form_id=form_id,
    )
    await api.publish_xlsform(workbook)
    return form_id


def visit_op(tablet: Device, form_id: str, ward: str, **answers: int) -> dict[str, Any]:
    return tablet.submission(form_id, ward, answers)


async def push_one(tablet: Device, op: dict[str, Any]) -> dict[str, Any]:
    response = await tablet.push(op)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["results"][0]
    return result


async def flagged(http: httpx.AsyncClient, headers: dict[str, str], **query: str) -> list[dict]:
    response = await http.get("/api/v1/submissions/flagged", params=query, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict] = response.json()
    return items


async def test_an_undecided_constraint_is_accepted_and_listed_for_the_wards_supervisor(
    api: Api,
) -> None:
    form_id = await publish_visits_form(api)
    tablet = Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))
    first = visit_op(tablet, form_id, HOAN_KIEM, beds=10, visits=2)
    second = visit_op(tablet, form_id, HOAN_KIEM, beds=12, visits=3)
    for op in (first, second):
        result = await push_one(tablet, op)
        assert (result["status"], result["errors"], result["flags"]) == ("applied", [], 1)

    supervisor = await api.user_session("supervisor", [HOAN_KIEM])
    items = await flagged(api.http, supervisor.headers, form_id=form_id)
    assert [item["instance_id"] for item in items] == [
        second["submission"]["instance_id"],
        first["submission"]["instance_id"],
    ]  # newest first
    item = items[1]
    assert (item["form_id"], item["form_version"], item["ward_code"]) == (form_id, "1", HOAN_KIEM)
    assert item["captured_at"].startswith("2026-02-20T03:00:00")
    assert item["received_at"]
    [flag] = item["flags"]
    assert flag["path"] == "$.submission.data.visits"
    assert (flag["rule"], flag["expression"]) == ("constraint", UNDECIDABLE)
    assert flag["reason"]
    assert len(await flagged(api.http, supervisor.headers, form_id=form_id, limit="1")) == 1
    assert await flagged(api.http, supervisor.headers, form_id=form_id, ward=HOAN_KIEM) == items


async def test_another_wards_supervisor_sees_none_and_a_field_worker_is_refused(
    api: Api,
) -> None:
    form_id = await publish_visits_form(api)
    tablet = Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))
    result = await push_one(tablet, visit_op(tablet, form_id, HOAN_KIEM, beds=1, visits=1))
    assert result["status"] == "applied", result

    elsewhere = await api.user_session("supervisor", [BA_DINH])
    assert await flagged(api.http, elsewhere.headers, form_id=form_id) == []
    # Asking for a ward one does not hold shows nothing rather than the ward's records.
    assert await flagged(api.http, elsewhere.headers, form_id=form_id, ward=HOAN_KIEM) == []
    both = await api.user_session("supervisor", [HOAN_KIEM, BA_DINH])
    assert len(await flagged(api.http, both.headers, form_id=form_id)) == 1
    assert await flagged(api.http, both.headers, form_id=form_id, ward=BA_DINH) == []

    refused = await api.http.get("/api/v1/submissions/flagged", headers=tablet.headers)
    assert_problem(refused, 403, "role_forbidden")


async def test_a_decided_constraint_still_rejects_and_is_not_listed(api: Api) -> None:
    form_id = await publish_visits_form(api)
    tablet = Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))
    result = await push_one(tablet, visit_op(tablet, form_id, HOAN_KIEM, beds=150, visits=1))
    assert result["status"] == "rejected"
    assert [(e["path"], e["code"]) for e in result["errors"]] == [
        ("$.submission.data.beds", "constraint")
    ]
    supervisor = await api.user_session("supervisor", [HOAN_KIEM])
    assert await flagged(api.http, supervisor.headers, form_id=form_id) == []


@pytest.mark.parametrize("limit", ["0", "1001", "many"])
async def test_a_limit_out_of_range_is_a_problem(api: Api, limit: str) -> None:
    supervisor = await api.user_session("supervisor", [HOAN_KIEM])
    response = await api.http.get(
        "/api/v1/submissions/flagged", params={"limit": limit}, headers=supervisor.headers
    )
    problem = assert_problem(response, 400, "validation_failed")
    assert [e["path"] for e in problem["errors"]] == ["query.limit"]


async def test_picks_from_the_files_the_server_makes_are_decided_not_flagged(api: Api) -> None:
    """The programme's inspection: the ward comes from wards.csv (the worker's own wards) and the
    establishment from establishments.csv (checked through the entity change it carries)."""
    tablet = Device(api.http, await api.user_session("inspector", [HOAN_KIEM]))
    created = tablet.inspection(HOAN_KIEM, properties={"business_name": "Quán Mới"})
    entity_id = created["submission"]["entities"][0]["entity_id"]
    assert (await push_one(tablet, created))["flags"] == 0

    update = tablet.inspection(
        HOAN_KIEM,
        entity_id=entity_id,
        action="update",
        base_version=1,
        properties={"risk_class": "low"},
        base_properties={"risk_class": None},
        data={"establishment": entity_id},
    )
    result = await push_one(tablet, update)
    assert (result["status"], result["errors"], result["flags"]) == ("applied", [], 0)

    # A pick the submission does not change cannot be judged here: accepted and flagged.
    elsewhere = tablet.inspection(HOAN_KIEM, data={"establishment": str(uuid.uuid4())})
    result = await push_one(tablet, elsewhere)
    assert (result["status"], result["flags"]) == ("applied", 1)

    # The submission's answer names a ward the worker does not have.
    foreign = tablet.inspection(HOAN_KIEM, data={"ward_code": BA_DINH})
    result = await push_one(tablet, foreign)
    assert result["status"] == "rejected"
    assert [(e["path"], e["code"]) for e in result["errors"]] == [
        ("$.submission.data.ward_code", "unknown_choice")
    ]
