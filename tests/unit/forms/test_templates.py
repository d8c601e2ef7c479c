"""The programme's XLSForm templates: each parses, and sample submissions behave as expected."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from forms import programme
from forms.programme import FORMS
from forms.spec import fields_by_name, sensitive_paths
from forms.validation import validate_submission
from schemas.forms import FormSpec

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# What the server knows of wards.csv for a worker of ward 00004 (server/services/forms.py).
MY_WARDS = {programme.WARDS_FILE: lambda code: code == "00004"}

VALID = {form_id: form.sample for form_id, form in FORMS.items()}
# One wrong thing per form, and where the error must point.
INVALID: dict[str, tuple[dict[str, Any], str, str]] = {
    "inspection": ({"kind": "casino"}, "/data/kind", "unknown_choice"),
    "training_session": ({"level": None}, "/data/level", "required"),
    "training_attendance": (
        {"attendance_date": "10/02/2026"},
        "/data/attendance_date",
        "wrong_type",
    ),
    "outreach_contact": (
        {
            "services": [
                {"service_type": "loan", "service_date": "2026-02-11"},
                {"service_type": "x", "service_date": "2026-02-12"},
            ]
        },
        "/data/services[2]/service_type",
        "unknown_choice",
    ),
    "communication_event": ({"head_count": "many"}, "/data/head_count", "wrong_type"),
    "tip_intake": ({"verified_at": None}, "/data/verified_at", "required"),
}


def load(name: str):  # type: ignore[no-untyped-def]
    return programme.template(name)


def check(spec: FormSpec, data: dict[str, Any], language: str = "vi"):  # type: ignore[no-untyped-def]
    return validate_submission(spec, data, now=NOW, language=language, file_choices=MY_WARDS)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_template_parses_with_ward_code_and_both_languages(name: str) -> None:
    imported = load(name)
    spec = imported.spec
    assert spec.form_id == name and spec.version.isdigit()
    assert spec.languages == ["vi", "en"]
    fields = fields_by_name(spec)
    assert fields["ward_code"].required is True
    for field in fields.values():
        if field.type not in ("calculate",) and field.path.split("/")[2] != "meta":
            assert set(field.labels) == {"vi", "en"}, field.path


@pytest.mark.parametrize("name", sorted(FORMS))
def test_template_valid_sample_is_accepted_with_nothing_left_undecided(name: str) -> None:
    result = check(load(name).spec, VALID[name])
    assert (result.errors, result.not_checked) == ([], [])


@pytest.mark.parametrize("name", sorted(FORMS))
def test_template_invalid_sample_is_rejected_at_the_field(name: str) -> None:
    change, path, code = INVALID[name]
    data = {**VALID[name], **change}
    result = check(load(name).spec, data)
    assert [(e.path, e.code) for e in result.errors] == [(path, code)]


def test_a_ward_the_worker_does_not_have_is_refused() -> None:
    data = {**VALID["communication_event"], "ward_code": "00070"}
    result = check(load("communication_event").spec, data, language="en")
    assert [(e.path, e.code) for e in result.errors] == [("/data/ward_code", "unknown_choice")]


def test_entity_lists_and_sensitive_fields() -> None:
    lists = {name: [b.list_name for b in load(name).spec.entities] for name in FORMS}
    assert lists == {
        "inspection": ["establishments"],
        "training_session": [],
        "training_attendance": ["trainees"],
        "outreach_contact": ["cases"],
        "communication_event": [],
        "tip_intake": ["tips"],
    }
    establishments = load("inspection").spec.entities[0].properties
    assert set(establishments) >= {
        "business_name",
        "kind",
        "address",
        "ward_code",
        "risk_class",
        "managed",
        "last_inspection_date",
        "result",
        "violations",
    }
    outreach = load("outreach_contact").spec
    assert "/data/client_code" in sensitive_paths(outreach)
    assert not any(
        "name" in f.name for f in fields_by_name(outreach).values()
    )  # codes, never names
    kinds = [c.name for c in fields_by_name(load("inspection").spec)["kind"].choices]
    assert kinds == ["karaoke", "massage", "hotel_guesthouse", "bar", "other"]
    statuses = [c.name for c in fields_by_name(load("tip_intake").spec)["status"].choices]
    assert statuses == ["received", "verified", "classified", "handled"]


def test_outreach_client_code_that_looks_like_a_name_is_refused() -> None:
    data = {**VALID["outreach_contact"], "client_code": "Nguyen Thi Hoa"}
    result = validate_submission(load("outreach_contact").spec, data, now=NOW)
    assert [(e.path, e.code) for e in result.errors] == [("/data/client_code", "constraint")]
