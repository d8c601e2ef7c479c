"""The programme module: its lists, roles and forms agree with each other and with the workbooks."""

from __future__ import annotations

import pytest

from forms import programme
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
