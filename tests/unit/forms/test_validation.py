"""Submission validation: types, choices, groups and repeats, relevance, required, constraints."""

from __future__ import annotations

from datetime import UTC, datetime

from forms.validation import validate_submission
from forms.xform import import_xform
from forms.xlsform import import_xlsform
from schemas.forms import FormSpec
from tests.unit.forms.test_import import ALL_TYPES, COLOURS
from tests.unit.forms.xlsforms import end, q, xlsform

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def spec_of(survey, choices=None) -> FormSpec:  # type: ignore[no-untyped-def]
    return import_xlsform(xlsform(survey, choices), "f.xlsx").spec


def errors(spec: FormSpec, data: dict, language: str = "vi") -> list[tuple[str, str]]:  # type: ignore[type-arg]
    result = validate_submission(spec, data, now=NOW, language=language)
    assert result.valid == (not result.errors)
    return [(e.path, e.code) for e in result.errors]


ALL_TYPES_SPEC = spec_of(ALL_TYPES, COLOURS)
GOOD = {
    "t_text": "xin chào",
    "t_integer": "12",
    "t_decimal": 3.5,
    "t_select_one": "red",
    "t_select_multiple": "red blue",
    "t_date": "2026-02-28",
    "t_time": "09:30:00",
    "t_datetime": "2026-02-28T09:30:00+07:00",
    "t_geopoint": "21.0285 105.8542 12 5",
    "t_image": "photo.jpg",
    "t_audio": "a.m4a",
    "t_file": "f.pdf",
    "t_calculate": "24",
    "t_group": {"t_in_group": "x", "t_repeat": [{"t_in_repeat": 1}, {"t_in_repeat": "2"}]},
}


def test_every_type_accepts_a_good_value() -> None:
    assert errors(ALL_TYPES_SPEC, GOOD) == []
    assert errors(ALL_TYPES_SPEC, {**GOOD, "t_select_multiple": ["red", "blue"]}) == []


def test_every_type_rejects_a_bad_value() -> None:
    bad = {
        "t_integer": "1.5",
        "t_decimal": "abc",
        "t_select_one": ["red"],
        "t_select_multiple": {"red": True},
        "t_date": "2026-13-01",
        "t_time": "25:00",
        "t_datetime": "yesterday",
        "t_geopoint": "95 10",
        "t_image": 5,
    }
    for name, value in bad.items():
        assert errors(ALL_TYPES_SPEC, {**GOOD, name: value}) == [(f"/data/{name}", "wrong_type")], (
            name
        )


def test_unknown_fields_and_choices_carry_their_paths() -> None:
    data = {
        **GOOD,
        "surprise": 1,
        "t_select_multiple": "red green",
        "t_group": {"t_repeat": [{"t_in_repeat": 1}, {"t_in_repeat": "x", "extra": 2}]},
    }
    assert sorted(errors(ALL_TYPES_SPEC, data)) == [
        ("/data/surprise", "unknown_field"),
        ("/data/t_group/t_repeat[2]/extra", "unknown_field"),
        ("/data/t_group/t_repeat[2]/t_in_repeat", "wrong_type"),
        ("/data/t_select_multiple", "unknown_choice"),
    ]


def test_groups_and_repeats_must_have_their_shape() -> None:
    assert errors(ALL_TYPES_SPEC, {"t_group": "flat"}) == [("/data/t_group", "wrong_type")]
    assert errors(ALL_TYPES_SPEC, {"t_group": {"t_repeat": {"t_in_repeat": 1}}}) == [
        ("/data/t_group/t_repeat", "wrong_type")
    ]


def test_required_and_its_message() -> None:
    spec = spec_of(
        [q("text", "a", required="yes", required_message="Cần nhập", required_message_en="Needed")]
    )
    assert errors(spec, {}) == [("/data/a", "required")]
    assert errors(spec, {"a": ""}) == [("/data/a", "required")]
    result = validate_submission(spec, {}, now=NOW, language="en")
    assert result.errors[0].message == "Needed"
    assert validate_submission(spec, {}, now=NOW).errors[0].message == "Cần nhập"


def test_required_only_when_relevant_including_ancestors() -> None:
    spec = spec_of(
        [
            q("select_one yn", "visited", required="yes"),
            q("begin_group", "visit", relevant="${visited} = 'yes'"),
            q("text", "who", required="yes"),
            end("group"),
        ],
        [("yn", "yes", "Có"), ("yn", "no", "Không")],
    )
    assert errors(spec, {"visited": "no"}) == []
    assert errors(spec, {"visited": "yes"}) == [("/data/visit/who", "required")]
    assert errors(spec, {"visited": "yes", "visit": {"who": "Lan"}}) == []


def test_constraint_message_in_the_requested_language_and_repeat_position() -> None:
    spec = spec_of(
        [
            q("begin_repeat", "rooms"),
            q(
                "integer",
                "beds",
                constraint=". >= 1 and . <= 20",
                constraint_message="Từ 1 đến 20",
                constraint_message_en="Between 1 and 20",
            ),
            end("repeat"),
        ]
    )
    data = {"rooms": [{"beds": 2}, {"beds": 40}, {"beds": 0}]}
    result = validate_submission(spec, data, now=NOW, language="en")
    assert [(e.path, e.code, e.message) for e in result.errors] == [
        ("/data/rooms[2]/beds", "constraint", "Between 1 and 20"),
        ("/data/rooms[3]/beds", "constraint", "Between 1 and 20"),
    ]
    assert validate_submission(spec, data, now=NOW).errors[0].message == "Từ 1 đến 20"


def test_siblings_inside_a_repeat_resolve_to_the_same_instance() -> None:
    spec = spec_of(
        [
            q("begin_repeat", "items"),
            q("integer", "ordered"),
            q("integer", "delivered", constraint=". <= ${ordered}"),
            end("repeat"),
        ]
    )
    good = {"items": [{"ordered": 5, "delivered": 5}, {"ordered": 9, "delivered": 2}]}
    assert errors(spec, good) == []
    bad = {"items": [{"ordered": 5, "delivered": 5}, {"ordered": 1, "delivered": 2}]}
    assert errors(spec, bad) == [("/data/items[2]/delivered", "constraint")]


def test_an_expression_the_evaluator_cannot_handle_is_not_checked() -> None:
    spec = spec_of([q("text", "a", constraint="pulldata('x', 'y', 'z', .) = 'ok'")])
    result = validate_submission(spec, {"a": "anything"}, now=NOW)
    assert result.valid
    assert [(n.path, n.rule, n.expression) for n in result.not_checked] == [
        ("/data/a", "constraint", "pulldata('x', 'y', 'z', .) = 'ok'")
    ]


def test_non_object_submission_is_rejected_not_crashed() -> None:
    assert errors(ALL_TYPES_SPEC, ["not", "a", "dict"]) == [("/data", "wrong_type")]  # type: ignore[arg-type]


# Answers picked from a file: the ward picker (wards.csv) and an entity list (people.csv).
FROM_FILES = spec_of(
    [
        q("select_one_from_file wards.csv", "ward", required="yes"),
        q("select_multiple_from_file people.csv", "people"),
    ]
)
MY_WARDS = {"00004", "00070"}


def file_checks(data: dict, **file_choices) -> tuple[list[tuple[str, str]], list[str]]:  # type: ignore[no-untyped-def,type-arg]
    result = validate_submission(FROM_FILES, data, now=NOW, file_choices=file_choices)
    return [(e.path, e.code) for e in result.errors], [n.path for n in result.not_checked]


def test_a_choice_from_a_file_nobody_describes_is_flagged_not_rejected() -> None:
    assert file_checks({"ward": "99999", "people": "a b"}) == ([], ["/data/ward", "/data/people"])


def test_the_caller_decides_what_a_file_holds_for_the_submitter() -> None:
    wards = {"wards.csv": lambda code: code in MY_WARDS}
    assert file_checks({"ward": "00070"}, **wards) == ([], [])
    assert file_checks({"ward": "99999"}, **wards) == ([("/data/ward", "unknown_choice")], [])
    assert file_checks({"ward": ""}, **wards) == ([("/data/ward", "required")], [])


def test_answers_a_caller_cannot_judge_are_still_flagged() -> None:
    # The caller knows only the people this submission changes; someone else stays undecided.
    people = {"people.csv": lambda name: True if name == "p1" else None}
    assert file_checks({"ward": "00004", "people": "p1"}, **people) == ([], ["/data/ward"])
    assert file_checks({"ward": "00004", "people": "p1 p2"}, **people) == (
        [],
        ["/data/ward", "/data/people"],
    )


def test_the_xform_names_the_file_its_choices_come_from() -> None:
    workbook = xlsform([q("select_one_from_file wards.csv", "ward")])
    xform = import_xlsform(workbook, "f.xlsx").xform
    [ward] = [f for f in import_xform(xform.encode(), "f.xml").spec.fields if f.name == "ward"]
    assert (ward.choice_list, ward.choices_known) == ("wards.csv", False)
    assert (FROM_FILES.fields[0].choice_list, FROM_FILES.fields[0].choices_known) == (
        "wards.csv",
        False,
    )
