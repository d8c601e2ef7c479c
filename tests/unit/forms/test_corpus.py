"""A corpus of varied XLSForms: each imports; good submissions pass, bad ones fail as expected."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from forms.validation import validate_submission
from forms.xform import import_xform
from forms.xlsform import import_xlsform
from tests.unit.forms.xlsforms import end, q, xlsform

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
YN = [("yn", "yes", "Có"), ("yn", "no", "Không")]


@dataclass
class Case:
    survey: list[dict[str, str]]
    good: list[dict[str, Any]]
    bad: list[tuple[dict[str, Any], list[tuple[str, str]]]]
    choices: list[Any] = field(default_factory=list)
    entities: list[dict[str, str]] | None = None


CORPUS: dict[str, Case] = {
    "cascading_selects": Case(
        [
            q("select_one district", "district", required="yes"),
            q("select_one ward", "ward", required="yes", choice_filter="district = ${district}"),
        ],
        [{"district": "bd", "ward": "bd1"}],
        [({"district": "bd", "ward": "zz"}, [("/data/ward", "unknown_choice")])],
        [
            ("district", "bd", "Ba Đình"),
            ("district", "hk", "Hoàn Kiếm"),
            ("ward", "bd1", "Phúc Xá", {"district": "bd"}),
            ("ward", "hk1", "Hàng Bạc", {"district": "hk"}),
        ],
    ),
    "repeat_in_group": Case(
        [
            q("begin_group", "household"),
            q("begin_repeat", "member"),
            q("text", "nick", required="yes"),
            q("integer", "age", constraint=". >= 0 and . < 130"),
            end("repeat"),
            end("group"),
        ],
        [{"household": {"member": [{"nick": "A", "age": 3}, {"nick": "B"}]}}],
        [
            (
                {"household": {"member": [{"nick": "A"}, {"age": 200}]}},
                [
                    ("/data/household/member[2]/nick", "required"),
                    ("/data/household/member[2]/age", "constraint"),
                ],
            )
        ],
    ),
    "or_other": Case(
        [q("select_one place or_other", "place", required="yes")],
        [{"place": "street"}, {"place": "other", "place_other": "chợ"}],
        [({"place": "moon"}, [("/data/place", "unknown_choice")])],
        [("place", "street", "Đường"), ("place", "home", "Nhà")],
    ),
    "calculation": Case(
        [
            q("integer", "a", required="yes"),
            q("integer", "b", required="yes", constraint=". <= 100"),
            {"type": "calculate", "name": "total", "calculation": "${a} + ${b}"},
            q("integer", "check", constraint=". = ${total}"),
        ],
        [{"a": 1, "b": 2, "total": "3", "check": 3}],
        [
            (
                {"a": 1, "b": 500, "check": 3},
                [("/data/b", "constraint"), ("/data/check", "constraint")],
            )
        ],
    ),
    "relevance_chain": Case(
        [
            q("select_one yn", "q1", required="yes"),
            q("select_one yn", "q2", relevant="${q1} = 'yes'", required="yes"),
            q("text", "q3", relevant="${q2} = 'yes'", required="yes"),
        ],
        [{"q1": "no"}, {"q1": "yes", "q2": "no"}, {"q1": "yes", "q2": "yes", "q3": "x"}],
        [
            ({"q1": "yes"}, [("/data/q2", "required")]),
            ({"q1": "yes", "q2": "yes"}, [("/data/q3", "required")]),
        ],
        YN,
    ),
    "entity_create": Case(
        [
            q("text", "ward_code", required="yes", save_to="ward_code"),
            q("text", "code", required="yes", save_to="code"),
        ],
        [{"ward_code": "00004", "code": "X1"}],
        [({"ward_code": "00004"}, [("/data/code", "required")])],
        entities=[{"list_name": "people", "label": "${code}"}],
    ),
    "entity_update": Case(
        [
            q("select_one_from_file people.csv", "existing", required="yes"),
            q("select_one yn", "active", save_to="active"),
        ],
        [{"existing": "0190c4b0-0000-7000-8000-000000000001", "active": "no"}],
        [({"existing": "e1", "active": "maybe"}, [("/data/active", "unknown_choice")])],
        YN,
        entities=[
            {
                "list_name": "people",
                "label": "${existing}",
                "update_if": "true()",
                "entity_id": "${existing}",
            }
        ],
    ),
    "select_multiple_limits": Case(
        [
            q(
                "select_multiple svc",
                "services",
                constraint="count-selected(.) <= 2",
                constraint_message="Tối đa 2",
            )
        ],
        [{"services": "a b"}, {"services": ["c"]}],
        [
            ({"services": "a b c"}, [("/data/services", "constraint")]),
            ({"services": "a z"}, [("/data/services", "unknown_choice")]),
        ],
        [("svc", "a", "A"), ("svc", "b", "B"), ("svc", "c", "C")],
    ),
    "nested_repeats": Case(
        [
            q("begin_repeat", "visits"),
            q("date", "day"),
            q("begin_repeat", "items"),
            q("integer", "qty", required="yes"),
            end("repeat"),
            end("repeat"),
        ],
        [{"visits": [{"day": "2026-01-02", "items": [{"qty": 1}, {"qty": 2}]}]}],
        [
            (
                {"visits": [{"items": [{"qty": 1}, {"qty": "two"}]}]},
                [("/data/visits[1]/items[2]/qty", "wrong_type")],
            )
        ],
    ),
    "required_expression": Case(
        [q("select_one kind", "kind"), q("text", "licence", required="${kind} = 'bar'")],
        [{"kind": "cafe"}, {"kind": "bar", "licence": "L-1"}],
        [({"kind": "bar"}, [("/data/licence", "required")])],
        [("kind", "bar", "Bar"), ("kind", "cafe", "Cafe")],
    ),
    "regex_constraint": Case(
        [
            q(
                "text",
                "phone",
                constraint="regex(., '^0[0-9]{9}$')",
                constraint_message="Số điện thoại sai",
            )
        ],
        [{"phone": "0912345678"}, {}],
        [({"phone": "12345"}, [("/data/phone", "constraint")])],
    ),
    "date_not_future": Case(
        [q("date", "day", required="yes", constraint=". <= today()")],
        [{"day": "2026-02-28"}],
        [
            ({"day": "2027-01-01"}, [("/data/day", "constraint")]),
            ({"day": "28/02/2026"}, [("/data/day", "wrong_type")]),
        ],
    ),
    "string_functions": Case(
        [
            q("text", "code", constraint="string-length(.) = 6 and starts-with(., 'HN')"),
            q("text", "note", constraint="not(contains(., 'tên'))"),
        ],
        [{"code": "HN1234", "note": "ok"}],
        [
            (
                {"code": "HCM123", "note": "có tên"},
                [("/data/code", "constraint"), ("/data/note", "constraint")],
            )
        ],
    ),
    "group_relevance": Case(
        [
            q("select_one yn", "has_visit", required="yes"),
            q("begin_group", "visit", relevant="${has_visit} = 'yes'"),
            q("integer", "minutes", required="yes"),
            q("text", "place", required="yes"),
            end("group"),
        ],
        [{"has_visit": "no"}, {"has_visit": "yes", "visit": {"minutes": 5, "place": "p"}}],
        [({"has_visit": "yes", "visit": {"minutes": 5}}, [("/data/visit/place", "required")])],
        YN,
    ),
    "decimals_and_coalesce": Case(
        [
            q("decimal", "weight", constraint=". > 0 and . < 500"),
            q("decimal", "height", constraint="coalesce(${weight}, 0) < . * 10"),
        ],
        # "60,5" is how a Vietnamese keyboard writes 60.5; JavaRosa reads it so.
        [{"weight": 60.5, "height": "170"}, {"weight": "60,5", "height": "170,2"}],
        [
            ({"weight": -1}, [("/data/weight", "constraint")]),
            ({"weight": "-0,5"}, [("/data/weight", "constraint")]),
            ({"weight": "1,5,2"}, [("/data/weight", "wrong_type")]),
        ],
    ),
    "if_and_arithmetic": Case(
        [
            q("integer", "adults"),
            q("integer", "children"),
            q(
                "integer",
                "total",
                constraint=". = if(${children} > 0, ${adults} + ${children}, ${adults})",
            ),
        ],
        [{"adults": 2, "children": 1, "total": 3}, {"adults": 2, "children": 0, "total": 2}],
        [({"adults": 2, "children": 1, "total": 5}, [("/data/total", "constraint")])],
    ),
    "unknown_fields": Case(
        [q("text", "a"), q("begin_group", "g"), q("text", "b"), end("group")],
        [{"a": "x", "g": {"b": "y"}}],
        [
            (
                {"a": "x", "c": 1, "g": {"d": 2}},
                [("/data/c", "unknown_field"), ("/data/g/d", "unknown_field")],
            )
        ],
    ),
}


def imported(name: str):  # type: ignore[no-untyped-def]
    case = CORPUS[name]
    return import_xlsform(
        xlsform(case.survey, case.choices, form_id=name, entities=case.entities), f"{name}.xlsx"
    )


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_form_imports_and_round_trips_through_xform(name: str) -> None:
    form = imported(name)
    assert form.spec.form_id == name and form.spec.hash
    again = import_xform(form.xform.encode(), f"{name}.xml").spec
    assert [f.path for f in again.fields if f.name != "meta"] == [
        f.path for f in form.spec.fields if f.name != "meta"
    ]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_good_submissions_pass(name: str) -> None:
    spec = imported(name).spec
    for data in CORPUS[name].good:
        assert validate_submission(spec, data, now=NOW).errors == [], data


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_bad_submissions_fail_where_expected(name: str) -> None:
    spec = imported(name).spec
    for data, expected in CORPUS[name].bad:
        result = validate_submission(spec, data, now=NOW)
        assert not result.valid
        assert sorted((e.path, e.code) for e in result.errors) == sorted(expected), data


def test_entity_bindings_of_the_corpus() -> None:
    [create] = imported("entity_create").spec.entities
    assert create.properties == {"ward_code": "/data/ward_code", "code": "/data/code"}
    [update] = imported("entity_update").spec.entities
    assert (update.update_if, update.entity_id) == ("true()", "${existing}")
