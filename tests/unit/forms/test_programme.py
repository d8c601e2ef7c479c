"""The programme module: its lists, roles and forms agree with each other and with the workbooks."""

from __future__ import annotations

import re

import pytest

from forms import programme
from forms.spec import fields_by_name, walk_fields
from schemas.identity import ROLES
from server.services.entity_lists import PROGRAMME_LISTS
from sync.merge import Policy


@pytest.mark.parametrize("form_id", sorted(programme.FORMS))
def test_every_save_to_names_a_declared_list_property(form_id: str) -> None:
    for binding in programme.template(form_id).spec.entities:
        assert binding.list_name in programme.LISTS, f"{form_id}: undeclared list"
        declared = programme.LISTS[binding.list_name].properties
        undeclared = sorted(set(binding.properties) - set(declared))
        assert not undeclared, f"{form_id} saves to {undeclared}, not in {binding.list_name}"


def test_every_declared_property_is_saved_by_some_form() -> None:
    saved: dict[str, set[str]] = {name: set() for name in programme.LISTS}
    for form_id in programme.FORMS:
        for binding in programme.template(form_id).spec.entities:
            saved[binding.list_name] |= set(binding.properties)
    for name, declared in programme.LISTS.items():
        assert set(declared.properties) == saved[name], name


def test_forms_are_the_workbooks_and_their_roles_are_roles() -> None:
    workbooks = {path.stem for path in programme.TEMPLATES_DIR.glob("*.xlsx")}
    assert set(programme.FORMS) == workbooks
    for form_id, form in programme.FORMS.items():
        assert programme.template(form_id).spec.form_id == form_id
        assert "supervisor" in form.roles and set(form.roles) <= set(ROLES), form_id


def test_the_server_merges_programme_lists_by_their_declared_policies() -> None:
    assert set(PROGRAMME_LISTS) == set(programme.LISTS)
    establishments = PROGRAMME_LISTS["establishments"]
    assert establishments.properties["risk_class"].policy is Policy.MANUAL
    assert establishments.properties["violations"].policy is Policy.SET
    assert establishments.natural_key == ("ward_code", "business_name", "address")
    assert PROGRAMME_LISTS["tips"].properties["status"].rank_order == (
        "received",
        "verified",
        "classified",
        "handled",
    )


def test_a_role_keeps_the_lists_of_the_forms_it_fills() -> None:
    assert programme.lists_of_role("inspector") == ("establishments", "tips")
    assert programme.lists_of_role("trainer") == ("trainees",)
    assert programme.lists_of_role("outreach") == ("cases",)


@pytest.mark.parametrize("form_id", sorted(programme.FORMS))
def test_the_ward_is_picked_from_the_workers_own_wards_never_typed(form_id: str) -> None:
    ward = fields_by_name(programme.template(form_id).spec)[programme.WARD_FIELD]
    assert (ward.type, ward.choice_list, ward.required) == ("select_one", "wards.csv", True)
    assert not ward.choices_known  # the server fills wards.csv per user


PICK = re.compile(r"coalesce\(\$\{(\w+)\}, uuid\(\)\)")
PREFILL = re.compile(r"instance\('(\w+)'\)/root/item\[name=\$\{(\w+)\}\]/(\w+)")


@pytest.mark.parametrize(
    "form_id", ["inspection", "training_attendance", "outreach_contact", "tip_intake"]
)
def test_the_record_to_update_is_picked_from_its_list_else_a_new_one_is_created(
    form_id: str,
) -> None:
    spec = programme.template(form_id).spec
    fields = fields_by_name(spec)
    [binding] = spec.entities
    match = PICK.fullmatch(binding.entity_id or "")
    assert match, binding.entity_id
    pick = fields[match[1]]
    assert (pick.type, pick.choice_list) == ("select_one", f"{binding.list_name}.csv")
    assert pick.required is False  # none picked: a new record
    assert pick.choice_filter == "ward_code = ${ward_code}"  # the records of the picked ward
    assert (binding.create_if, binding.update_if) == (
        f"${{{pick.name}}} = ''",
        f"${{{pick.name}}} != ''",
    )
    # Picking a record fills the fields it saves with its current values.
    prefilled = {
        f.name: PREFILL.fullmatch(f.calculation)
        for f in walk_fields(spec.fields)
        if f.calculation and f.type != "calculate"
    }
    assert prefilled, form_id
    for name, found in prefilled.items():
        assert found, f"{form_id}.{name}: {fields[name].calculation}"
        assert (found[1], found[2]) == (binding.list_name, pick.name)
        assert found[3] == fields[name].save_to, name
