"""The permission table: what each role may do, and how form roles and wards scope a verb."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import pytest

from schemas.identity import CITY_WIDE, ROLES, Role
from server.errors import Forbidden
from server.permissions import GRANTS, FormScope, Verb, WardScope, can, require, roles_with

# Who holds each unscoped verb: written out so a change to the table is a visible change here.
EXPECTED: dict[str, tuple[str, ...]] = {
    "user.admin": ("admin",),
    "audit.read": ("admin",),
    "form.admin": ("admin",),
    "form.fill_any": ("admin",),
    "form.review": ("admin", "supervisor"),
    "form.read_all": ("admin", "supervisor", "viewer"),
    "conflict.resolve": ("admin", "supervisor"),
    "submission.supervise": ("admin", "supervisor"),
    "sensitive.read": ("admin", "supervisor"),
    "data.submit": ("admin", "supervisor", "outreach", "trainer", "inspector"),
}


@dataclass(frozen=True)
class Caller:
    role: str
    wards: tuple[str, ...] = ("00070",)

    def may_see_ward(self, ward_code: str) -> bool:
        return CITY_WIDE in self.wards or ward_code in self.wards


def test_roles_are_the_role_literal_and_each_has_a_line_in_the_table() -> None:
    assert get_args(Role) == ROLES
    assert set(GRANTS) == set(ROLES)


def test_each_verb_is_granted_to_the_roles_the_docs_name() -> None:
    assert set(EXPECTED) | {"form.fill", "form.read"} == set(get_args(Verb))
    for verb, roles in EXPECTED.items():
        assert roles_with(verb) == roles, verb  # type: ignore[arg-type]


def test_a_form_is_filled_by_the_roles_it_lists_and_by_admins() -> None:
    inspection = FormScope(["inspector", "supervisor"])
    assert can(Caller("inspector"), "form.fill", inspection)
    assert can(Caller("admin"), "form.fill", inspection)
    assert not can(Caller("outreach"), "form.fill", inspection)
    assert not can(Caller("viewer"), "form.fill", inspection)
    # Reading the spec: whoever fills it, and the roles that read every form.
    assert can(Caller("viewer"), "form.read", inspection)
    assert not can(Caller("outreach"), "form.read", inspection)
    assert not can(Caller("trainer"), "form.fill", FormScope([]))


def test_sensitive_data_is_read_by_supervisors_of_the_ward_and_admins() -> None:
    assert can(Caller("supervisor", ("00070",)), "sensitive.read", WardScope("00070"))
    assert not can(Caller("supervisor", ("00070",)), "sensitive.read", WardScope("00004"))
    assert can(Caller("admin", (CITY_WIDE,)), "sensitive.read", WardScope("00004"))
    assert not can(Caller("outreach", ("00070",)), "sensitive.read", WardScope("00070"))


def test_a_verb_about_a_record_without_its_scope_is_a_programming_error() -> None:
    for verb in ("form.fill", "form.read", "sensitive.read"):
        with pytest.raises(TypeError):
            can(Caller("admin"), verb)


def test_an_unknown_role_may_do_nothing() -> None:
    for verb in EXPECTED.keys() - {"sensitive.read"}:
        assert not can(Caller("janitor"), verb)  # type: ignore[arg-type]
    assert not can(Caller("janitor"), "form.fill", FormScope(["inspector"]))


def test_require_refuses_with_role_forbidden_naming_the_roles() -> None:
    require(Caller("supervisor"), "conflict.resolve")
    with pytest.raises(Forbidden) as refused:
        require(Caller("viewer"), "conflict.resolve")
    assert refused.value.instance_code == "role_forbidden"
    assert "admin or supervisor" in refused.value.detail
