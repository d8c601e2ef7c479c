"""What changed between two versions of a form, and which changes would break stored data."""

from __future__ import annotations

from forms.spec import fields_by_path
from schemas.forms import ChoicesChange, FieldRef, FormDiff, FormSpec, Relabel, TypeChange

# Type changes that keep every stored answer valid (an integer is a valid decimal, etc.).
_COMPATIBLE = frozenset(
    {
        ("integer", "decimal"),
        ("select_one", "select_multiple"),
        ("integer", "text"),
        ("decimal", "text"),
        ("select_one", "text"),
        ("date", "text"),
        ("calculate", "text"),
        ("text", "calculate"),
        ("note", "text"),
    }
)


def diff_specs(a: FormSpec, b: FormSpec) -> FormDiff:
    """Fields added, removed, relabelled, type-changed and choices changed from `a` to `b`."""
    old, new = fields_by_path(a), fields_by_path(b)
    diff = FormDiff(
        added=[FieldRef(path=p, type=f.type) for p, f in new.items() if p not in old],
        removed=[FieldRef(path=p, type=f.type) for p, f in old.items() if p not in new],
    )
    for path, before in old.items():
        after = new.get(path)
        if after is None:
            continue
        if before.labels != after.labels:
            diff.relabelled.append(Relabel(path=path, before=before.labels, after=after.labels))
        if before.type != after.type:
            diff.type_changed.append(TypeChange(path=path, before=before.type, after=after.type))
        old_choices = {c.name: c.labels for c in before.choices}
        new_choices = {c.name: c.labels for c in after.choices}
        if old_choices != new_choices:
            diff.choices_changed.append(
                ChoicesChange(
                    path=path,
                    added=[n for n in new_choices if n not in old_choices],
                    removed=[n for n in old_choices if n not in new_choices],
                    relabelled=[
                        n
                        for n in old_choices
                        if n in new_choices and old_choices[n] != new_choices[n]
                    ],
                )
            )
    return diff


def incompatible_type_changes(old: FormSpec, new: FormSpec) -> list[str]:
    """Paths whose type change may break stored answers; publishing refuses them unless forced."""
    return [
        change.path
        for change in diff_specs(old, new).type_changed
        if (change.before, change.after) not in _COMPATIBLE
    ]
