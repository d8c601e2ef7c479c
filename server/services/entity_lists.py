"""Entity lists: the programme's own (declared here, with merge policies) and those forms declare.

A form may declare a new list the XLSForm way (entities sheet + save_to); its properties then
default to `lww`. Which lists a role reads and writes follows from the forms the role fills.
"""

from __future__ import annotations

import msgspec

from forms.spec import fields_by_path
from schemas.forms import FormSpec
from server.db.json_columns import from_json, to_json
from server.db.tables_forms import Form, FormVersion
from server.db.tables_sync import EntityListRow
from server.permissions import role_can
from sync.merge import EntityListDef, Policy, PropertyDef

P = PropertyDef
_YES_NO = P(type="select_one")

# The programme's lists (DOMAIN.md). Policies: what a supervisor would expect when two people
# edit the same record offline.
PROGRAMME_LISTS: dict[str, EntityListDef] = {
    "establishments": EntityListDef(
        name="establishments",
        properties={
            "ward_code": P(type="text"),
            "business_name": P(type="text"),
            "kind": P(type="select_one"),
            "address": P(type="text"),
            # A risk class is a judgement: two inspectors disagreeing is for a supervisor.
            "risk_class": P(type="select_one", policy=Policy.MANUAL),
            "managed": _YES_NO,
            "last_inspection_date": P(type="date"),
            "result": P(type="select_one"),
            "violations": P(type="select_multiple", policy=Policy.SET),
        },
        natural_key=("ward_code", "business_name", "address"),
    ),
    "trainees": EntityListDef(
        name="trainees",
        properties={
            "ward_code": P(type="text"),
            "staff_id": P(type="text"),
            "full_name": P(type="text"),
            "level": P(type="select_one"),
            "unit": P(type="text"),
            # Once trained, a concurrent "not yet" does not undo it.
            "trained": P(type="select_one", policy=Policy.RANK, rank_order=("no", "yes")),
            "trained_date": P(type="date"),
        },
        natural_key=("staff_id",),
    ),
    "cases": EntityListDef(
        name="cases",
        properties={
            "ward_code": P(type="text"),
            "client_code": P(type="text"),
            "needs": P(type="select_multiple", policy=Policy.SET),
            "eligible": P(type="select_one", policy=Policy.MANUAL),
            "status": P(type="select_one"),
        },
        natural_key=("client_code",),
    ),
    "tips": EntityListDef(
        name="tips",
        properties={
            "ward_code": P(type="text"),
            "kind": P(type="select_one"),
            "source_channel": P(type="select_one"),
            "summary": P(type="text"),
            # Handling only moves forward: received < verified < classified < handled.
            "status": P(
                type="select_one",
                policy=Policy.RANK,
                rank_order=("received", "verified", "classified", "handled"),
            ),
            "received_at": P(type="datetime"),
            "verified_at": P(type="datetime"),
            "classification": P(type="select_one", policy=Policy.MANUAL),
            "classified_at": P(type="datetime"),
            "handled_at": P(type="datetime"),
            "handling_result": P(type="text"),
        },
    ),
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
