"""XLSForm and XForm import: every field type, both languages, entities, and broken uploads."""

from __future__ import annotations

import io
import zipfile

import msgspec
import pytest

from forms.spec import fields_by_name, sensitive_paths
from forms.xform import import_xform
from forms.xlsform import FormImportError, import_form, import_xlsform
from schemas.forms import FormSpec
from tests.unit.forms.xlsforms import EN, VI, end, q, xlsform

ALL_TYPES = [
    q("text", "t_text"),
    q("integer", "t_integer"),
    q("decimal", "t_decimal"),
    q("select_one colour", "t_select_one"),
    q("select_multiple colour", "t_select_multiple"),
    q("date", "t_date"),
    q("time", "t_time"),
    q("datetime", "t_datetime"),
    q("geopoint", "t_geopoint"),
    q("image", "t_image", parameters="max-pixels=1024"),
    q("audio", "t_audio"),
    q("file", "t_file"),
    q("note", "t_note"),
    {"type": "calculate", "name": "t_calculate", "calculation": "${t_integer} * 2"},
    q("begin_group", "t_group"),
    q("text", "t_in_group"),
    q("begin_repeat", "t_repeat"),
    q("integer", "t_in_repeat"),
    end("repeat"),
    end("group"),
]
COLOURS = [("colour", "red", "Đỏ"), ("colour", "blue", "Xanh")]
EXPECTED_TYPES = {
    "t_text": "text",
    "t_integer": "integer",
    "t_decimal": "decimal",
    "t_select_one": "select_one",
    "t_select_multiple": "select_multiple",
    "t_date": "date",
    "t_time": "time",
    "t_datetime": "datetime",
    "t_geopoint": "geopoint",
    "t_image": "image",
    "t_audio": "audio",
    "t_file": "file",
    "t_note": "note",
    "t_calculate": "calculate",
    "t_group": "group",
    "t_in_group": "text",
    "t_repeat": "repeat",
    "t_in_repeat": "integer",
}


def issues_of(
    data: bytes, filename: str = "form.xlsx"
) -> list[tuple[str, int | None, str | None, str]]:
    with pytest.raises(FormImportError) as caught:
        import_form(data, filename)
    assert caught.value.code == "xlsform_invalid"
    return [(i.sheet, i.row, i.column, i.message) for i in caught.value.issues]


def test_every_field_type_keeps_its_type_path_and_labels_in_both_languages() -> None:
    imported = import_xlsform(
        xlsform(ALL_TYPES, COLOURS, form_id="all_types", version="7"), "all.xlsx"
    )
    spec = imported.spec
    assert (spec.form_id, spec.version, spec.default_language) == ("all_types", "7", "vi")
    assert spec.languages == ["vi", "en"]
    fields = fields_by_name(spec)
    assert {name: fields[name].type for name in EXPECTED_TYPES} == EXPECTED_TYPES
    assert fields["t_in_repeat"].path == "/data/t_group/t_repeat/t_in_repeat"
    assert fields["t_text"].labels == {"vi": "t_text", "en": "t_text (en)"}
    assert [c.name for c in fields["t_select_one"].choices] == ["red", "blue"]
    assert fields["t_select_one"].choices[0].labels == {"vi": "Đỏ", "en": "Đỏ (en)"}
    assert fields["t_calculate"].calculation == "${t_integer} * 2"
    assert "<h:html" in imported.xform and 'id="all_types"' in imported.xform


def test_spec_json_round_trips_and_hash_is_stable() -> None:
    data = xlsform(ALL_TYPES, COLOURS)
    first = import_xlsform(data, "a.xlsx").spec
    second = import_xlsform(data, "b.xlsx").spec
    assert first.hash == second.hash and len(first.hash) == 64
    decoded = msgspec.json.decode(msgspec.json.encode(first), type=FormSpec)
    assert decoded == first
    relabelled = xlsform([q("text", "t_text", "khác"), *ALL_TYPES[1:]], COLOURS)
    assert import_xlsform(relabelled, "c.xlsx").spec.hash != first.hash


def test_xform_import_gives_the_same_fields_as_the_xlsform() -> None:
    imported = import_xlsform(xlsform(ALL_TYPES, COLOURS), "all.xlsx")
    again = import_xform(imported.xform.encode(), "all.xml")
    assert again.source_kind == "xform"
    original, parsed = fields_by_name(imported.spec), fields_by_name(again.spec)
    for name, kind in EXPECTED_TYPES.items():
        assert parsed[name].type == kind, name
        assert parsed[name].path == original[name].path
        assert parsed[name].labels == original[name].labels
    assert [c.labels for c in parsed["t_select_one"].choices] == [
        c.labels for c in original["t_select_one"].choices
    ]
    assert parsed["t_calculate"].calculation == "${t_integer} * 2"
    assert again.spec.form_id == "test_form" and again.spec.languages == ["vi", "en"]


def test_xform_rules_and_messages_come_through_with_refs_rewritten() -> None:
    survey = [
        q("integer", "age", constraint=". >= ${minimum}", constraint_message="Quá nhỏ"),
        q("integer", "minimum", relevant="${age} > 1", required="yes"),
    ]
    imported = import_xlsform(xlsform(survey), "f.xlsx")
    fields = fields_by_name(import_form(imported.xform.encode(), "f.xml").spec)
    assert fields["age"].constraint == ". >= ${minimum}"
    assert fields["age"].constraint_message == {"vi": "Quá nhỏ", "en": "Quá nhỏ (en)"}
    assert fields["minimum"].relevant == "${age} > 1"
    assert fields["minimum"].required is True


def test_xform_with_external_entity_is_refused() -> None:
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<h:html xmlns:h="http://www.w3.org/1999/xhtml"><h:head>&e;</h:head></h:html>'
    )
    [(_, _, _, message)] = issues_of(evil, "evil.xml")
    assert "not a readable XForm" in message


def test_sensitive_save_to_and_entities_are_read() -> None:
    survey = [
        q("text", "ward_code", save_to="ward_code"),
        q("text", "client_code", save_to="code", sensitive="yes"),
        q("text", "note_free", sensitive="no"),
    ]
    entities = [{"list_name": "cases", "label": "${client_code}"}]
    spec = import_xlsform(xlsform(survey, entities=entities), "e.xlsx").spec
    assert sensitive_paths(spec) == ["/data/client_code"]
    [binding] = spec.entities
    assert binding.list_name == "cases" and binding.label == "${client_code}"
    assert binding.properties == {"ward_code": "/data/ward_code", "code": "/data/client_code"}


def test_plain_label_columns_use_the_default_language() -> None:
    spec = import_xlsform(xlsform([q("text", "a", "Tên")], plain_labels=True), "p.xlsx").spec
    assert spec.default_language == "vi"
    assert fields_by_name(spec)["a"].labels == {"vi": "Tên"}


def test_not_an_xlsx_file() -> None:
    [(sheet, row, _, message)] = issues_of(b"name,age\nAn,3\n", "form.xlsx")
    assert (sheet, row) == ("", None) and "not an Excel workbook" in message
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("hello.txt", "not a workbook")
    [(_, _, _, message)] = issues_of(zipped.getvalue())
    assert "not an Excel workbook" in message


def test_workbook_without_survey_sheet() -> None:
    [(sheet, _, _, message)] = issues_of(xlsform([q("text", "a")], sheet_name="questions"))
    assert sheet == "survey" and "no sheet named 'survey'" in message


def test_duplicate_field_name_names_both_rows() -> None:
    [(sheet, row, column, message)] = issues_of(
        xlsform([q("text", "a"), q("integer", "b"), q("integer", "a")])
    )
    assert (sheet, row, column) == ("survey", 4, "B")
    assert "rows 2 and 4" in message


def test_missing_choice_list() -> None:
    [(sheet, row, column, message)] = issues_of(xlsform([q("select_one nowhere", "a")], COLOURS))
    assert (sheet, row, column) == ("survey", 2, "A")
    assert "choice list 'nowhere' does not exist" in message


def test_unparseable_expression_and_unknown_reference() -> None:
    survey = [
        q("integer", "a", constraint=". > (1 +"),
        q("integer", "b", relevant="${missing} = 1"),
    ]
    issues = issues_of(xlsform(survey))
    assert len(issues) == 2
    (s1, r1, c1, m1), (s2, r2, c2, m2) = issues
    assert (s1, r1) == ("survey", 2) and "cannot be read" in m1 and c1 is not None
    assert (s2, r2) == ("survey", 3) and "${missing}" in m2 and c2 is not None


def test_pyxform_errors_are_mapped_to_sheet_and_row() -> None:
    # `save_to` with no entities sheet is caught by pyxform, which names the row.
    [(sheet, row, _, message)] = issues_of(xlsform([q("text", "a"), q("text", "b", save_to="x")]))
    assert (sheet, row) == ("survey", 3)
    assert "save_to" in message and "[row" not in message


def test_all_problems_are_reported_at_once() -> None:
    survey = [
        q("text", "a"),
        q("text", "a"),
        q("select_one gone", "c"),
        q("text", "d", relevant="("),
    ]
    assert len(issues_of(xlsform(survey))) == 3


def test_languages_from_label_columns() -> None:
    data = xlsform([q("text", "a", "Tên", label_en="Name")])
    field = fields_by_name(import_xlsform(data, "l.xlsx").spec)["a"]
    assert field.labels == {"vi": "Tên", "en": "Name"}
    assert VI.endswith("(vi)") and EN.endswith("(en)")


def test_a_form_time_zone_is_read_from_the_settings_sheet() -> None:
    tokyo = import_xlsform(
        xlsform([q("date", "d")], settings={"time_zone": "Asia/Tokyo"}), "t.xlsx"
    )
    assert tokyo.spec.time_zone == "Asia/Tokyo"
    assert msgspec.json.decode(msgspec.json.encode(tokyo.spec), type=FormSpec) == tokyo.spec
    plain = import_xlsform(xlsform([q("date", "d")]), "p.xlsx").spec
    # Absent rather than null, so the specs published before the column existed keep their hash.
    assert plain.time_zone is msgspec.UNSET
    assert b"time_zone" not in msgspec.json.encode(plain)
    assert plain.hash != tokyo.spec.hash


@pytest.mark.parametrize("zone", ["Asia/Hanoi", "GMT+7", "../../etc/passwd"])
def test_an_unknown_time_zone_is_an_issue_on_the_settings_sheet(zone: str) -> None:
    [(sheet, row, column, message)] = issues_of(
        xlsform([q("date", "d")], settings={"time_zone": zone})
    )
    assert (sheet, row, column) == ("settings", 2, "E")
    assert f"'{zone}'" in message and "Asia/Ho_Chi_Minh" in message
