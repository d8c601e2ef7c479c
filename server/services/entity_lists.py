"""Entity lists: the programme's own (forms/programme.py, with merge policies) and those forms declare.

A form may declare a new list the XLSForm way (entities sheet + save_to); its properties then
default to `lww`. Which lists a role reads and writes follows from the forms the role fills.
"""

from __future__ import annotations

import msgspec

from forms import programme
from forms.spec import fields_by_path
from schemas.forms import FormSpec
from server.db.json_columns import from_json, to_json
from server.db.tables_forms import Form, FormVersion
from server.db.tables_sync import EntityListRow
from server.permissions import role_can
from sync.merge import EntityListDef, PropertyDef

# The programme's lists, declared in forms/programme.py with the shape of EntityListDef.
PROGRAMME_LISTS: dict[str, EntityListDef] = {
    name: msgspec.convert(msgspec.to_builtins(declared), EntityListDef)
    for name, declared in programme.LISTS.items()
}

_FIELD_TO_PROPERTY_TYPE = {
    "integer": "integer",
    "decimal": "decimal",
    "date": "date",
    "datetime": "datetime",
    "select_one": "select_one",
    "select_multiple": "select_multiple",
    "geopoint": "geopoint",
}

_cache: dict[str, EntityListDef] = {}


def lists_declared_by(spec: FormSpec) -> list[EntityListDef]:
    """New lists a form declares, with lww properties typed from the fields that save to them."""
    by_path = fields_by_path(spec)
    declared = []
    for binding in spec.entities:
        if binding.list_name in PROGRAMME_LISTS:
            continue
        properties = {
            prop: PropertyDef(
                type=_FIELD_TO_PROPERTY_TYPE.get(by_path[path].type, "any")
                if path in by_path
                else "any"
            )
            for prop, path in binding.properties.items()
        }
        properties.setdefault("ward_code", PropertyDef(type="text"))
        declared.append(EntityListDef(name=binding.list_name, properties=properties))
    return declared


async def register_form_lists(spec: FormSpec) -> None:
    """Called when a form version is published (inside its transaction)."""
    for listdef in lists_declared_by(spec):
        existing = (
            await EntityListRow.select(EntityListRow.definition)
            .where(EntityListRow.name == listdef.name)
            .first()
        )
        if existing is not None:
            # A later version may add properties; existing ones keep their type and policy.
            old = from_json(existing["definition"], EntityListDef)
            merged = {**listdef.properties, **old.properties}
            listdef = msgspec.structs.replace(old, properties=merged)
            await EntityListRow.update({EntityListRow.definition: to_json(listdef)}).where(
                EntityListRow.name == listdef.name
            )
        else:
            await EntityListRow.insert(
                EntityListRow(
                    name=listdef.name,
                    definition=to_json(listdef),
                    declared_by=spec.form_id,
                )
            )
        _cache.pop(listdef.name, None)


async def get_list(name: str) -> EntityListDef | None:
    if name in PROGRAMME_LISTS:
        return PROGRAMME_LISTS[name]
    if name not in _cache:
        row = (
            await EntityListRow.select(EntityListRow.definition)
            .where(EntityListRow.name == name)
            .first()
        )
        if row is None:
            return None
        _cache[name] = from_json(row["definition"], EntityListDef)
    return _cache[name]


_role_lists: dict[str, frozenset[str]] = {}


def forget_role_lists() -> None:
    """Forms were published or their roles changed."""
    _role_lists.clear()


async def lists_for_role(role: str) -> frozenset[str]:
    """Lists a role reads and writes: those of the forms it fills; supervisors, admins, viewers: all."""
    if role not in _role_lists:
        _role_lists[role] = frozenset(await _lists_for_role(role))
    return _role_lists[role]


async def _lists_for_role(role: str) -> set[str]:
    rows = await FormVersion.select(FormVersion.form, FormVersion.spec).where(
        FormVersion.status == "published"
    )
    forms = {
        r["form_id"]: from_json(r["roles"]) for r in await Form.select(Form.form_id, Form.roles)
    }
    lists: set[str] = set()
    for row in rows:
        spec = from_json(row["spec"])
        if role_can(role, "form.read_all") or role in forms.get(row["form"], []):
            lists.update(e["list_name"] for e in spec.get("entities", []))
    if role_can(role, "form.read_all"):
        lists.update(PROGRAMME_LISTS)
    return lists
