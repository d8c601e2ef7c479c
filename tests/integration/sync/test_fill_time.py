"""today() and now() are judged when the device says the form was completed, in the form's time
zone or else the programme's (FIELDSYNC_TIMEZONE, Asia/Ho_Chi_Minh by default), as ODK Collect
judged them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from forms.validation import validate_submission
from server.auth import Principal
from server.services.forms import accepting_spec
from tests.helpers import HOAN_KIEM, Api, unique
from tests.integration.sync.helpers import Device
from tests.ops import FORM_VERSION, INSPECTION_DATA
from tests.unit.forms.xlsforms import q, xlsform

pytestmark = pytest.mark.db

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")


def hanoi(day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, tzinfo=HANOI)


async def push_inspection(tablet: Device, captured_at: datetime, inspection_date: date) -> dict:
    op = tablet.inspection(HOAN_KIEM, data={"inspection_date": inspection_date.isoformat()})
    op["submission"]["captured_at"] = captured_at.astimezone(UTC).isoformat()
    response = await tablet.push(op)
    assert response.status_code == 200, response.text
    result: dict = response.json()["results"][0]
    return result


async def test_an_early_morning_inspection_dated_today_in_hanoi_is_accepted(api: Api) -> None:
    tablet = Device(api.http, await api.user_session("inspector"))
    # 06:30 in Hanoi is 23:30 UTC of the day before: "today" is the Hanoi date.
    day = datetime.now(HANOI).date() - timedelta(days=1)
    result = await push_inspection(tablet, hanoi(day, time(6, 30)), day)
    assert result["status"] == "applied", result


async def test_a_form_synced_days_later_is_judged_on_the_day_it_was_filled(api: Api) -> None:
    tablet = Device(api.http, await api.user_session("inspector"))
    filled = datetime.now(HANOI).date() - timedelta(days=5)
    on_the_day = await push_inspection(tablet, hanoi(filled, time(10, 0)), filled)
    assert on_the_day["status"] == "applied", on_the_day
    # A date after the fill day was in the future on the tablet: Collect refused it there.
    later = await push_inspection(tablet, hanoi(filled, time(10, 0)), filled + timedelta(days=2))
    assert later["status"] == "rejected"
    assert [(e["path"], e["code"]) for e in later["errors"]] == [
        ("$.submission.data.inspection_date", "constraint")
    ]


async def test_today_in_hanoi_differs_from_the_utc_date_before_seven(api: Api) -> None:
    """The rule itself, at a fixed moment: 06:30 Hanoi on 17 June 2026 is 16 June in UTC."""
    admin = Principal(
        user_id=api.admin.user["id"],
        username=api.admin.user["username"],
        role="admin",
        wards=("*",),
        device_id=api.admin.device_id,
    )
    spec = await accepting_spec(admin, "inspection", FORM_VERSION)
    answers = {"ward_code": HOAN_KIEM, **INSPECTION_DATA, "inspection_date": "2026-06-17"}
    moment = hanoi(date(2026, 6, 17), time(6, 30))
    assert validate_submission(spec, answers, now=moment).errors == []
    utc_errors = validate_submission(spec, answers, now=moment.astimezone(UTC)).errors
    assert [e.code for e in utc_errors] == ["constraint"]


async def test_a_form_with_its_own_time_zone_judges_today_there(api: Api) -> None:
    """16:00 UTC is 01:00 the next day in Tokyo but 23:00 the same day in Hanoi: a date of the
    Tokyo day is today for a form set to Asia/Tokyo and the future for one in the programme's."""
    survey = [q("date", "visit_date", constraint=". <= today()")]
    tokyo, programme = unique("tokyo_"), unique("hanoi_")
    await api.publish_xlsform(xlsform(survey, form_id=tokyo, settings={"time_zone": "Asia/Tokyo"}))
    await api.publish_xlsform(xlsform(survey, form_id=programme))
    filled = datetime.combine(datetime.now(UTC).date() - timedelta(days=3), time(16, 0), UTC)
    tokyo_day = filled.astimezone(ZoneInfo("Asia/Tokyo")).date()
    assert tokyo_day == filled.astimezone(HANOI).date() + timedelta(days=1)
    tablet = Device(api.http, await api.user_session("inspector"))
    results = {}
    for form_id in (tokyo, programme):
        op = tablet.submission(
            form_id,
            HOAN_KIEM,
            {"visit_date": tokyo_day.isoformat()},
            captured_at=filled.isoformat(),
        )
        response = await tablet.push(op)
        assert response.status_code == 200, response.text
        results[form_id] = response.json()["results"][0]
    assert results[tokyo]["status"] == "applied", results[tokyo]
    assert results[programme]["status"] == "rejected"
    assert [(e["path"], e["code"]) for e in results[programme]["errors"]] == [
        ("$.submission.data.visit_date", "constraint")
    ]
