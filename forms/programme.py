"""The programme (DOMAIN.md) in one place: its six forms, who fills each, the entity lists they
keep (properties, merge policies, natural keys) and one valid submission per form.

The forms themselves are XLSForm workbooks in `forms/templates/<form_id>.xlsx`, edited in a
spreadsheet by a form designer: pyxform reads them as they are, and the server publishes them on
a fresh database. What an XLSForm cannot say lives here, and the server, the simulator, the
benchmarks and the tests all read it from here.

How the forms are built (tests/unit/forms/test_programme.py checks it):
- the ward is picked by name from `wards.csv` (`select_one_from_file`, `name` = ward code,
  `label` = ward name), which the server makes for each user from their own wards; the answer,
  `ward_code`, is the ward the submission belongs to;
- the record a form updates is picked from its entity list (`select_one_from_file
  establishments.csv`, searchable, limited to the picked ward); when none is picked the form
  creates one (entities sheet: `create_if`/`update_if` on the pick, `entity_id` the pick or a
  new uuid), and picking one fills the fields it saves with its current values (`trigger`);
- every `save_to` names a property declared in `LISTS`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import msgspec

from forms.spec import fields_by_name
from forms.xlsform import ImportedForm, import_xlsform

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
# The ward picker's choices: the user's own wards, served with every form that asks for them.
WARDS_FILE = "wards.csv"
# The answer every programme form carries: the ward code the submission is scoped by.
WARD_FIELD = "ward_code"

PolicyName = Literal["lww", "manual", "rank", "set", "counter"]


class ListProperty(msgspec.Struct, frozen=True, kw_only=True):
    """One property of an entity list and how concurrent edits of it merge (sync/merge.py)."""

    type: str = "string"
    policy: PolicyName = "lww"
    rank_order: tuple[str, ...] = ()


class ProgrammeList(msgspec.Struct, frozen=True, kw_only=True):
    """An entity list, shaped as sync.merge.EntityListDef (the server converts it)."""

    name: str
    properties: dict[str, ListProperty]
    natural_key: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ProgrammeForm:
    form_id: str
    roles: tuple[str, ...]  # who fills it; supervisors fill every form
    sample: dict[str, Any]  # one valid submission (what tests, benchmarks and the simulator send)


P = ListProperty
_YES_NO = P(type="select_one")

# Policies: what a supervisor would expect when two people edit the same record offline.
LISTS: dict[str, ProgrammeList] = {
    "establishments": ProgrammeList(
        name="establishments",
        properties={
            "ward_code": P(type="text"),
            "business_name": P(type="text"),
            "kind": P(type="select_one"),
            "address": P(type="text"),
            # A risk class is a judgement: two inspectors disagreeing is for a supervisor.
            "risk_class": P(type="select_one", policy="manual"),
            "managed": _YES_NO,
            "last_inspection_date": P(type="date"),
            "result": P(type="select_one"),
            "violations": P(type="select_multiple", policy="set"),
        },
        natural_key=("ward_code", "business_name", "address"),
    ),
    "trainees": ProgrammeList(
        name="trainees",
        properties={
            "ward_code": P(type="text"),
            "staff_id": P(type="text"),
            "full_name": P(type="text"),
            "level": P(type="select_one"),
            "unit": P(type="text"),
            # Once trained, a concurrent "not yet" does not undo it.
            "trained": P(type="select_one", policy="rank", rank_order=("no", "yes")),
            "trained_date": P(type="date"),
        },
        natural_key=("staff_id",),
    ),
    "cases": ProgrammeList(
        name="cases",
        properties={
            "ward_code": P(type="text"),
            "client_code": P(type="text"),
            "needs": P(type="select_multiple", policy="set"),
            "eligible": P(type="select_one", policy="manual"),
            "status": P(type="select_one"),
        },
        natural_key=("client_code",),
    ),
    "tips": ProgrammeList(
        name="tips",
        properties={
            "ward_code": P(type="text"),
            "kind": P(type="select_one"),
            "source_channel": P(type="select_one"),
            "summary": P(type="text"),
            # Handling only moves forward: received < verified < classified < handled.
            "status": P(
                type="select_one",
                policy="rank",
                rank_order=("received", "verified", "classified", "handled"),
            ),
            "received_at": P(type="datetime"),
            "verified_at": P(type="datetime"),
            "classification": P(type="select_one", policy="manual"),
            "classified_at": P(type="datetime"),
            "handled_at": P(type="datetime"),
            "handling_result": P(type="text"),
        },
    ),
}

# Who fills each form (DOMAIN.md "Who uses it"), and one valid submission of it.
FORMS: dict[str, ProgrammeForm] = {
    form.form_id: form
    for form in (
        ProgrammeForm(
            form_id="inspection",
            roles=("supervisor", "inspector"),
            sample={
                "ward_code": "00004",
                "est_name": "Karaoke Hoa Mai",
                "kind": "karaoke",
                "address": "12 Phố Huế",
                "risk_class": "high",
                "managed": "yes",
                "inspection_date": "2026-02-20",
                "result": "violation_found",
                "violations": ["no_licence", "opening_hours"],
                "location": "21.01 105.85",
            },
        ),
        ProgrammeForm(
            form_id="training_session",
            roles=("supervisor", "trainer"),
            sample={
                "ward_code": "00004",
                "session_date": "2026-02-10",
                "level": "ward",
                "topic": "Luật",
                "trainer": "Nguyễn Văn A",
                "participants": 30,
            },
        ),
        ProgrammeForm(
            form_id="training_attendance",
            roles=("supervisor", "trainer"),
            sample={
                "ward_code": "00004",
                "staff_id": "CB0012",
                "full_name": "Trần Thị B",
                "level": "city",
                "unit": "Sở Y tế",
                "trained": "yes",
                "attendance_date": "2026-02-10",
            },
        ),
        ProgrammeForm(
            form_id="outreach_contact",
            roles=("supervisor", "outreach"),
            sample={
                "ward_code": "00004",
                "client_code": "HN001234",
                "contact_date": "2026-02-11",
                "contact_place": "venue",
                "consent": "yes",
                "screening": {"needs": "sti_testing legal_aid", "eligible": "yes"},
                "services": [{"service_type": "sti_testing", "service_date": "2026-02-11"}],
                "referrals": [{"referred_to": "legal_aid_centre", "referral_outcome": "pending"}],
                "case_status": "open",
            },
        ),
        ProgrammeForm(
            form_id="communication_event",
            roles=("supervisor", "outreach", "trainer"),
            sample={
                "ward_code": "00004",
                "event_date": "2026-02-01",
                "channel": "meeting",
                "topic": "Phòng chống",
                "audience_group": ["residents", "youth"],
                "head_count": 120,
            },
        ),
        ProgrammeForm(
            form_id="tip_intake",
            roles=("supervisor", "inspector"),
            sample={
                "ward_code": "00004",
                "tip_kind": "report",
                "source_channel": "hotline",
                "summary": "…",
                "status": "verified",
                "received_at": "2026-02-01T08:00:00+07:00",
                "verified_at": "2026-02-02T10:00:00+07:00",
            },
        ),
    )
}


def list_file(list_name: str) -> str:
    """The attachment a form picks a list's records from (`select_one_from_file <list>.csv`)."""
    return f"{list_name}.csv"


def template_path(form_id: str) -> Path:
    return TEMPLATES_DIR / f"{form_id}.xlsx"


@cache
def template(form_id: str) -> ImportedForm:
    """The form's workbook, imported as an upload would be (parsed once per process)."""
    path = template_path(form_id)
    return import_xlsform(path.read_bytes(), path.name)


def form_version(form_id: str) -> str:
    """The version in the form's settings sheet: the one published on a fresh database."""
    return template(form_id).spec.version


def choice_names(form_id: str, field: str) -> tuple[str, ...]:
    """The names of a select field's choices, in the form's order."""
    return tuple(c.name for c in fields_by_name(template(form_id).spec)[field].choices)


def lists_of_role(role: str) -> tuple[str, ...]:
    """The lists a field role keeps: those the forms it fills write (sorted)."""
    return tuple(
        sorted(
            {
                binding.list_name
                for form in FORMS.values()
                if role in form.roles
                for binding in template(form.form_id).spec.entities
            }
        )
    )


def sample(form_id: str, **answers: Any) -> dict[str, Any]:
    """A fresh copy of the form's sample with `answers` replacing its own."""
    return {**copy.deepcopy(FORMS[form_id].sample), **answers}


def inspection_answers(**answers: Any) -> dict[str, Any]:
    """The inspection sample without its ward (each op sets its own) and location."""
    data = sample("inspection", **answers)
    for name in (WARD_FIELD, "location"):
        if name not in answers:
            data.pop(name)
    return data
