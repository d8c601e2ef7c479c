"""Version diffs and the publish guard against incompatible type changes."""

from __future__ import annotations

from forms.diff import diff_specs, incompatible_type_changes
from forms.xlsform import import_xlsform
from tests.unit.forms.xlsforms import q, xlsform

CHOICES = [("c", "a", "A"), ("c", "b", "B")]


def spec(survey, choices=CHOICES):  # type: ignore[no-untyped-def]
    return import_xlsform(xlsform(survey, choices), "f.xlsx").spec


def test_diff_names_added_removed_relabelled_type_and_choice_changes() -> None:
    old = spec(
        [q("text", "kept"), q("integer", "count"), q("select_one c", "pick"), q("text", "gone")]
    )
    new = spec(
        [
            q("text", "kept", "đổi nhãn"),
            q("text", "count"),
            q("select_one c", "pick"),
            q("date", "new"),
        ],
        [("c", "a", "A mới"), ("c", "z", "Z")],
    )
    diff = diff_specs(old, new)
    assert [(f.path, f.type) for f in diff.added] == [("/data/new", "date")]
    assert [f.path for f in diff.removed] == ["/data/gone"]
    assert [r.path for r in diff.relabelled] == ["/data/kept"]
    assert diff.relabelled[0].after["vi"] == "đổi nhãn"
    assert [(t.path, t.before, t.after) for t in diff.type_changed] == [
        ("/data/count", "integer", "text")
    ]
    [choices] = diff.choices_changed
    assert (choices.path, choices.added, choices.removed, choices.relabelled) == (
        "/data/pick",
        ["z"],
        ["b"],
        ["a"],
    )


def test_same_form_has_an_empty_diff() -> None:
    form = [q("text", "a"), q("select_one c", "b")]
    diff = diff_specs(spec(form), spec(form))
    assert not (
        diff.added or diff.removed or diff.relabelled or diff.type_changed or diff.choices_changed
    )


def test_incompatible_type_changes_are_named_and_widening_is_allowed() -> None:
    old = spec([q("integer", "n"), q("text", "t"), q("select_one c", "s")])
    new = spec([q("decimal", "n"), q("integer", "t"), q("select_multiple c", "s")])
    assert incompatible_type_changes(old, new) == ["/data/t"]
    assert incompatible_type_changes(new, old) == ["/data/n", "/data/s"]
