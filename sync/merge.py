"""The merge engine: per-property three-way merge of entity changes (PROTOCOL.md "Entities and
conflicts"). One engine for the whole product: push, the resolve op, the conflicts API and the
reference client all call these functions. Pure: no I/O, no clock; the caller passes a
`WriteContext` (device, user, op_seq, HLC) and persists what comes back.

Data model (how the server stores it)
-------------------------------------
`EntityListDef` declares a list: its typed properties, each with a `Policy` (`lww`, `manual`,
`rank` with `rank_order`, `set`, `counter`), the scope property (`ward_code`) and an optional
natural key (for `duplicate_candidate`).

`EntityState` is one entity row. Besides `version`, `deleted`, `label` and `properties`, it keeps
three bookkeeping maps keyed by property name, meant as JSON columns next to `properties`:

- `prop_versions[p]`: the entity version that last changed `p` (drives conflict detection);
- `prop_hlcs[p]`: the HLC of that write (only breaks ties);
- `prop_writers[p]`: `Writer(device_id, user_id, op_seq)` of that write, JSON `[dev, user, seq]`
  (so a stream's own later op is never in conflict with its earlier one).

Two reserved keys, which no property name can take, hold entity-level facts in the same maps:
`"@label"` (the label is a last-writer-wins register by HLC, silently) and `"@deleted"` (the last
delete/undelete). `msgspec.to_builtins(state)` / `msgspec.convert(row, EntityState)` round-trip a
row.

Rules
-----
For an update from `base_version = b`, each property `p` in the change is
- untouched (its value equals the writer's `base_properties[p]`): skipped, the writer did not edit
  it (without this, a resent unchanged value would depend on arrival order);
- seen (`prop_versions[p] <= b`, or last written by an earlier op of the same op stream, i.e. the
  same device and user: op_seq counts per stream): fast-forward;
- else converged (server value equals the new one, as sets for `set`): nothing to do;
- else concurrent: the policy decides and a conflict is recorded: `lww` (higher
  `(hlc, device_id, op_seq)` wins; `auto_resolved`), `manual` (the same deterministic pick is
  kept as the provisional value, conflict `open`), `rank` (higher in `rank_order` wins, ties by
  lww key; `auto_resolved`), `set` (`(server - removed) | added` against `base_properties`,
  `auto_resolved`), `counter` (`server + (new - base)`, `auto_resolved`; never "converged": two
  equal increments are two increments).
`manual` does not simply keep the value that arrived first, because the result must not depend on
arrival order; a person picks the final value by resolving the open conflict.

Entity level: a create of an existing id is an update from base 0. A delete tombstones the entity
(properties are kept, so an undelete restores them); if it did not see some property write, the
delete still applies and an open `delete_update` conflict keeps the unseen values as a candidate.
An update/create reaching a tombstone is merged into the tombstone's properties, the entity stays
deleted, and an open `update_after_delete` conflict holds the update as a candidate. Both orders of
a delete and a concurrent update thus end in the same state with the same candidates; the conflict
kind names which arrived last. `undelete` is an explicit decision and never conflicts.

The entity version goes up by one for each change that changes anything (value, label, deleted);
`MergeOutcome.changed` also covers a label re-stamp that needs storing but no new version.
Marking older open conflicts `superseded` needs the stored conflicts and is left to the caller.
Conflict candidates are sorted by `(hlc, device_id, op_seq)`, so concurrent changes applied in
either order give the same entity content and the same candidates. That needs base values:
updates should send `base_properties` for every property they carry (counter updates must). A
create of an existing id has no base, so against a concurrent update its outcome can depend on
arrival order (it only happens when a device reuses an id).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from schemas.common import ErrorItem
from schemas.errors import CodedError, ErrorCode
from schemas.sync import ConflictCandidate, ConflictKind, EntityChange, EntityStatus

LABEL_KEY = "@label"
DELETED_KEY = "@deleted"
# The candidate value standing for "the entity is deleted" in delete/update conflicts.
TOMBSTONE_VALUE: dict[str, Any] = {"deleted": True, "properties": {}}


class ConflictStale(CodedError, ValueError):
    """The entity moved on since the conflict was recorded (HTTP 409)."""

    code = ErrorCode.STALE


class ResolutionInvalid(CodedError, ValueError):
    """A resolution names no candidate, or its value does not fit the property."""

    code = ErrorCode.RESOLUTION_INVALID


class Policy(StrEnum):
    LWW = "lww"
    MANUAL = "manual"
    RANK = "rank"
    SET = "set"
    COUNTER = "counter"


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_date(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value) is not None


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_geopoint(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(_is_number(item) for item in value)
    )


# Property types (XLSForm names and their aliases); null is always accepted (a cleared field).
TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": _is_text,
    "text": _is_text,
    "select_one": _is_text,
    "int": _is_int,
    "integer": _is_int,
    "decimal": _is_number,
    "bool": lambda value: isinstance(value, bool),
    "date": _is_date,
    "datetime": _is_text,
    "select_multiple": _is_text_list,
    "geopoint": _is_geopoint,
    "any": lambda value: True,
}


class PropertyDef(msgspec.Struct, frozen=True, kw_only=True):
    type: str = "string"
    policy: Policy = Policy.LWW
    rank_order: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in TYPE_CHECKS:
            raise ValueError(f"unknown property type {self.type!r}")
        if self.policy == Policy.RANK and not self.rank_order:
            raise ValueError("a rank property declares its rank_order")
        if self.policy == Policy.SET and self.type != "select_multiple":
            raise ValueError("a set property has type select_multiple")
        if self.policy == Policy.COUNTER and self.type not in ("int", "integer", "decimal"):
            raise ValueError("a counter property is numeric")


class EntityListDef(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    properties: dict[str, PropertyDef]
    scope_property: str = "ward_code"
    natural_key: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.scope_property not in self.properties:
            raise ValueError(f"scope property {self.scope_property!r} is not declared")
        for name in self.natural_key or ():
            if name not in self.properties:
                raise ValueError(f"natural key property {name!r} is not declared")


class Writer(msgspec.Struct, frozen=True, array_like=True):
    device_id: str
    user_id: str
    op_seq: int


class WriteContext(msgspec.Struct, frozen=True, kw_only=True):
    """Who writes, and when: one op of one device (the server uses its own node id and op_seq 0)."""

    device_id: str
    user_id: str
    op_seq: int
    hlc: str

    @property
    def writer(self) -> Writer:
        return Writer(self.device_id, self.user_id, self.op_seq)


class EntityState(msgspec.Struct, frozen=True, kw_only=True):
    entity_id: str
    list: str
    version: int
    deleted: bool = False
    label: str | None = None
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    prop_versions: dict[str, int] = msgspec.field(default_factory=dict)
    prop_hlcs: dict[str, str] = msgspec.field(default_factory=dict)
    prop_writers: dict[str, Writer] = msgspec.field(default_factory=dict)


OutcomeConflictStatus = Literal["open", "auto_resolved", "resolved"]


class NewConflict(msgspec.Struct, frozen=True, kw_only=True):
    """A conflict to store. `seen_version` is the property's (or, for entity-level kinds, the
    entity's) version when it was recorded: a resolution is stale once that has moved on."""

    kind: ConflictKind
    status: OutcomeConflictStatus
    property: str | None
    candidates: tuple[ConflictCandidate, ...]
    seen_version: int
    base: Any = None
    chosen: Any = None


class MergeOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """`state` is the entity to store (unchanged on rejection, None for a rejected create).

    `changed` means the row differs and must be stored; the content changed (and devices must
    receive it) exactly when `state.version` went up.
    """

    state: EntityState | None
    status: EntityStatus
    changed: bool = False
    conflicts: tuple[NewConflict, ...] = ()
    errors: tuple[ErrorItem, ...] = ()


class ResolveOutcome(msgspec.Struct, frozen=True, kw_only=True):
    state: EntityState
    changed: bool
    resolved: NewConflict


# ----------------------------------------------------------------------------------------------
# Validation


def validate_change(
    current: EntityState | None, change: EntityChange, listdef: EntityListDef
) -> list[ErrorItem]:
    """Errors that reject the change; paths are relative to the EntityChange."""
    errors: list[ErrorItem] = []
    if change.list != listdef.name:
        errors.append(ErrorItem("list", ErrorCode.LIST_MISMATCH, f"not list {listdef.name!r}"))
        return errors
    if current is None and change.action != "create":
        errors.append(
            ErrorItem("entity_id", ErrorCode.ENTITY_NOT_FOUND, "no such entity to change")
        )
    if current is not None and change.base_version > current.version:
        errors.append(
            ErrorItem(
                "base_version",
                ErrorCode.BASE_VERSION_AHEAD,
                "base_version is newer than the server",
            )
        )
    if current is None and change.action == "create":
        if change.properties.get(listdef.scope_property) in (None, ""):
            errors.append(
                ErrorItem(
                    f"properties.{listdef.scope_property}",
                    ErrorCode.SCOPE_MISSING,
                    "a new entity names its scope",
                )
            )
    for name, value in change.properties.items():
        errors.extend(_validate_value(listdef, name, value, f"properties.{name}"))
        pdef = listdef.properties.get(name)
        needs_base = pdef is not None and pdef.policy == Policy.COUNTER
        if needs_base and change.action in ("update", "undelete"):
            if change.base_properties is None or name not in change.base_properties:
                errors.append(
                    ErrorItem(
                        f"base_properties.{name}",
                        ErrorCode.BASE_PROPERTY_MISSING,
                        "a counter update sends the value it started from",
                    )
                )
    for name, value in (change.base_properties or {}).items():
        errors.extend(_validate_value(listdef, name, value, f"base_properties.{name}"))
    return errors


def _validate_value(listdef: EntityListDef, name: str, value: Any, path: str) -> list[ErrorItem]:
    pdef = listdef.properties.get(name)
    if pdef is None:
        return [
            ErrorItem(path, ErrorCode.PROPERTY_UNKNOWN, f"list {listdef.name!r} has no {name!r}")
        ]
    if value is None:
        return []
    if not TYPE_CHECKS[pdef.type](value):
        return [ErrorItem(path, ErrorCode.PROPERTY_TYPE, f"expected {pdef.type}")]
    if pdef.policy == Policy.RANK and value not in pdef.rank_order:
        return [
            ErrorItem(
                path, ErrorCode.RANK_VALUE_UNKNOWN, f"expected one of {list(pdef.rank_order)}"
            )
        ]
    return []


# ----------------------------------------------------------------------------------------------
# Helpers shared by the rules


def _lww_key(hlc: str, writer: Writer) -> tuple[str, str, int]:
    return (hlc, writer.device_id, writer.op_seq)


def _candidate_key(candidate: ConflictCandidate) -> tuple[str, str, int]:
    return (candidate.hlc, candidate.device_id, candidate.op_seq)


def _candidates(*items: ConflictCandidate) -> tuple[ConflictCandidate, ...]:
    return tuple(sorted(items, key=_candidate_key))


def _candidate(value: Any, hlc: str, writer: Writer, at_version: int) -> ConflictCandidate:
    return ConflictCandidate(
        value=value,
        hlc=hlc,
        device_id=writer.device_id,
        user_id=writer.user_id,
        op_seq=writer.op_seq,
        at_version=at_version,
    )


def _as_set(value: Any) -> set[Any]:
    return set(value or [])


def _same_value(pdef: PropertyDef, left: Any, right: Any) -> bool:
    if pdef.policy == Policy.SET and isinstance(left, list) and isinstance(right, list):
        return set(left) == set(right)
    return bool(left == right) and type(left) is type(right)


def _rank(pdef: PropertyDef, value: Any) -> int:
    return pdef.rank_order.index(value) if value in pdef.rank_order else -1


def _seen(state: EntityState, key: str, base_version: int, ctx: WriteContext) -> bool:
    """The writer of this change had seen the current value of `key` (fast-forward)."""
    if state.prop_versions.get(key, 0) <= base_version:
        return True
    last = state.prop_writers.get(key)
    # An earlier op of the same op stream (device and user) is always causally before a later one.
    return (
        last is not None
        and last.device_id == ctx.device_id
        and last.user_id == ctx.user_id
        and last.op_seq < ctx.op_seq
    )


def _default_base(pdef: PropertyDef) -> Any:
    if pdef.policy == Policy.COUNTER:
        return 0
    if pdef.policy == Policy.SET:
        return []
    return None


class _Draft:
    """A mutable copy of an EntityState while one change is merged into it."""

    def __init__(self, state: EntityState) -> None:
        self.base = state
        self.new_version = state.version + 1
        self.deleted = state.deleted
        self.label = state.label
        self.properties = dict(state.properties)
        self.prop_versions = dict(state.prop_versions)
        self.prop_hlcs = dict(state.prop_hlcs)
        self.prop_writers = dict(state.prop_writers)
        self.changed = False  # content changed: the version goes up
        self.touched = False  # only bookkeeping changed: store the row, same version

    def stamp(self, key: str, ctx: WriteContext) -> None:
        self.prop_versions[key] = self.new_version
        self.prop_hlcs[key] = ctx.hlc
        self.prop_writers[key] = ctx.writer
        self.changed = True

    def write(self, name: str, value: Any, ctx: WriteContext) -> None:
        self.properties[name] = value
        self.stamp(name, ctx)

    def touch(self, key: str, ctx: WriteContext) -> None:
        self.prop_hlcs[key] = ctx.hlc
        self.prop_writers[key] = ctx.writer
        self.touched = True

    def finish(self) -> EntityState:
        if not (self.changed or self.touched):
            return self.base
        return EntityState(
            entity_id=self.base.entity_id,
            list=self.base.list,
            version=self.new_version if self.changed else self.base.version,
            deleted=self.deleted,
            label=self.label,
            properties=self.properties,
            prop_versions=self.prop_versions,
            prop_hlcs=self.prop_hlcs,
            prop_writers=self.prop_writers,
        )


def _status(conflicts: Iterable[NewConflict]) -> EntityStatus:
    statuses = {conflict.status for conflict in conflicts}
    if "open" in statuses:
        return "conflict"
    if "auto_resolved" in statuses:
        return "merged"
    return "applied"


# ----------------------------------------------------------------------------------------------
# The rules


def apply_entity_change(
    current: EntityState | None,
    change: EntityChange,
    listdef: EntityListDef,
    ctx: WriteContext,
) -> MergeOutcome:
    """Merge one entity change from one op into the server's current state of that entity."""
    if current is not None and current.entity_id != change.entity_id:
        raise ValueError("current state belongs to another entity")
    errors = validate_change(current, change, listdef)
    if errors:
        return MergeOutcome(state=current, status="rejected", errors=tuple(errors))
    if current is None:
        return MergeOutcome(state=_create(change, ctx), status="applied", changed=True)

    draft = _Draft(current)
    conflicts: list[NewConflict] = []
    if change.action == "delete":
        conflicts.extend(_delete(draft, change, ctx))
    else:
        was_deleted = current.deleted
        if change.action == "undelete" and was_deleted:
            draft.deleted = False
            draft.stamp(DELETED_KEY, ctx)
        conflicts.extend(_merge_properties(draft, change, listdef, ctx))
        _merge_label(draft, change, ctx)
        if was_deleted and change.action != "undelete":
            conflicts.extend(_update_after_delete(draft, change, listdef, ctx))
    return MergeOutcome(
        state=draft.finish(),
        status=_status(conflicts),
        changed=draft.changed or draft.touched,
        conflicts=tuple(conflicts),
    )


def _create(change: EntityChange, ctx: WriteContext) -> EntityState:
    keys = list(change.properties) + ([LABEL_KEY] if change.label is not None else [])
    return EntityState(
        entity_id=change.entity_id,
        list=change.list,
        version=1,
        label=change.label,
        properties=dict(change.properties),
        prop_versions=dict.fromkeys(keys, 1),
        prop_hlcs=dict.fromkeys(keys, ctx.hlc),
        prop_writers=dict.fromkeys(keys, ctx.writer),
    )


def _merge_properties(
    draft: _Draft, change: EntityChange, listdef: EntityListDef, ctx: WriteContext
) -> list[NewConflict]:
    base_version = change.base_version
    base_properties = change.base_properties or {}
    current = draft.base
    conflicts: list[NewConflict] = []
    for name in sorted(change.properties):
        new = change.properties[name]
        pdef = listdef.properties[name]
        server = current.properties.get(name)
        if name in base_properties and _same_value(pdef, base_properties[name], new):
            continue  # the writer did not edit this property: nothing to merge
        if _seen(current, name, base_version, ctx):
            if name not in current.properties or not _same_value(pdef, server, new):
                draft.write(name, new, ctx)
            continue
        if pdef.policy != Policy.COUNTER and _same_value(pdef, server, new):
            continue  # converged
        base = base_properties.get(name, _default_base(pdef))
        server_writer = current.prop_writers[name]
        server_hlc = current.prop_hlcs[name]
        incoming_wins = _lww_key(ctx.hlc, ctx.writer) > _lww_key(server_hlc, server_writer)
        if pdef.policy == Policy.SET:
            added = _as_set(new) - _as_set(base)
            removed = _as_set(base) - _as_set(new)
            result: Any = sorted((_as_set(server) - removed) | added)
        elif pdef.policy == Policy.COUNTER:
            result = (server or 0) + ((new or 0) - (base or 0))
        elif pdef.policy == Policy.RANK:
            incoming_key = (_rank(pdef, new), incoming_wins)
            result = new if incoming_key > (_rank(pdef, server), not incoming_wins) else server
        else:  # lww, manual
            result = new if incoming_wins else server
        if not _same_value(pdef, server, result):
            draft.write(name, result, ctx)
        candidates = _candidates(
            _candidate(server, server_hlc, server_writer, current.prop_versions[name]),
            _candidate(new, ctx.hlc, ctx.writer, current.version),
        )
        is_manual = pdef.policy == Policy.MANUAL
        conflicts.append(
            NewConflict(
                kind="concurrent_update",
                status="open" if is_manual else "auto_resolved",
                property=name,
                base=base_properties.get(name),
                candidates=candidates,
                chosen=None if is_manual else result,
                seen_version=draft.prop_versions[name],
            )
        )
    return conflicts


def _merge_label(draft: _Draft, change: EntityChange, ctx: WriteContext) -> None:
    """The label is display text that forms recompute and resend with every edit, without a base
    value: a plain last-writer-wins register by HLC, no conflict record. A resent equal label with
    a newer HLC only moves the register's stamp (no new version), so arrival order never matters."""
    current = draft.base
    last = current.prop_writers.get(LABEL_KEY)
    if change.label is None:
        return
    if last is not None and _lww_key(ctx.hlc, ctx.writer) < _lww_key(
        current.prop_hlcs[LABEL_KEY], last
    ):
        return
    if change.label == current.label:
        draft.touch(LABEL_KEY, ctx)
    else:
        draft.label = change.label
        draft.stamp(LABEL_KEY, ctx)


def _delete(draft: _Draft, change: EntityChange, ctx: WriteContext) -> list[NewConflict]:
    current = draft.base
    if current.deleted:
        return []  # converged: already a tombstone
    unseen = [
        name
        for name in sorted(current.properties)
        if not _seen(current, name, change.base_version, ctx)
    ]
    draft.deleted = True
    draft.stamp(DELETED_KEY, ctx)
    if not unseen:
        return []
    # The live side is represented by its newest unseen write.
    newest = max(unseen, key=lambda n: _lww_key(current.prop_hlcs[n], current.prop_writers[n]))
    live = _candidate(
        {"deleted": False, "properties": {name: current.properties[name] for name in unseen}},
        current.prop_hlcs[newest],
        current.prop_writers[newest],
        max(current.prop_versions[name] for name in unseen),
    )
    tombstone = _candidate(TOMBSTONE_VALUE, ctx.hlc, ctx.writer, current.version)
    return [
        NewConflict(
            kind="delete_update",
            status="open",
            property=None,
            candidates=_candidates(live, tombstone),
            seen_version=draft.new_version,
        )
    ]


def _update_after_delete(
    draft: _Draft, change: EntityChange, listdef: EntityListDef, ctx: WriteContext
) -> list[NewConflict]:
    current = draft.base
    # Only what the update would change is its side of the choice; no change, no conflict.
    changed = {
        name: value
        for name, value in sorted(change.properties.items())
        if name not in current.properties
        or not _same_value(listdef.properties[name], current.properties[name], value)
    }
    if not changed:
        return []
    delete_writer = current.prop_writers.get(DELETED_KEY, ctx.writer)
    tombstone = _candidate(
        TOMBSTONE_VALUE,
        current.prop_hlcs.get(DELETED_KEY, ctx.hlc),
        delete_writer,
        current.prop_versions.get(DELETED_KEY, current.version),
    )
    update = _candidate(
        {"deleted": False, "properties": changed}, ctx.hlc, ctx.writer, current.version
    )
    return [
        NewConflict(
            kind="update_after_delete",
            status="open",
            property=None,
            candidates=_candidates(tombstone, update),
            seen_version=draft.new_version if draft.changed else current.version,
        )
    ]


# ----------------------------------------------------------------------------------------------
# Duplicates by natural key


def _normalize(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(unicodedata.normalize("NFC", value).casefold().split())
    return value


def natural_key(properties: Mapping[str, Any], listdef: EntityListDef) -> str | None:
    """Canonical text of an entity's natural key (for an indexed column), None if it has none."""
    if not listdef.natural_key:
        return None
    parts = [_normalize(properties.get(name)) for name in listdef.natural_key]
    if any(part in (None, "") for part in parts):
        return None
    return json.dumps(parts, ensure_ascii=False, separators=(",", ":"))


def _identity_candidate(state: EntityState, listdef: EntityListDef) -> ConflictCandidate:
    key_names = listdef.natural_key or ()
    first = key_names[0] if key_names else listdef.scope_property
    return _candidate(
        {
            "entity_id": state.entity_id,
            "label": state.label,
            "properties": {name: state.properties.get(name) for name in key_names},
        },
        state.prop_hlcs.get(first, ""),
        state.prop_writers.get(first, Writer("", "", 0)),
        state.prop_versions.get(first, state.version),
    )


def find_duplicate_candidates(
    new_state: EntityState, existing: Iterable[EntityState], listdef: EntityListDef
) -> list[NewConflict]:
    """Open `duplicate_candidate` conflicts for a just-created entity against live entities that
    share its natural key. The server passes the rows it found by `natural_key(...)`."""
    key = natural_key(new_state.properties, listdef)
    if key is None:
        return []
    found: list[NewConflict] = []
    for other in sorted(existing, key=lambda state: state.entity_id):
        if other.entity_id == new_state.entity_id or other.deleted:
            continue
        if natural_key(other.properties, listdef) != key:
            continue
        found.append(
            NewConflict(
                kind="duplicate_candidate",
                status="open",
                property=None,
                candidates=_candidates(
                    _identity_candidate(other, listdef), _identity_candidate(new_state, listdef)
                ),
                seen_version=new_state.version,
            )
        )
    return found


# ----------------------------------------------------------------------------------------------
# Resolution


def resolve_conflict(
    state: EntityState,
    conflict: NewConflict,
    listdef: EntityListDef,
    ctx: WriteContext,
    *,
    choice: int | None = None,
    value: Any | UnsetType = UNSET,
) -> ResolveOutcome:
    """Write the chosen candidate (or an explicit value) as a new version of the entity.

    Raises `ConflictStale` when the entity moved on since the conflict was recorded, and
    `ResolutionInvalid` for a choice out of range or a value that does not fit. A
    `duplicate_candidate` resolution only records the decision; merging or deleting one of
    the two entities is a separate, ordinary change.
    """
    if (choice is None) == (value is UNSET):
        raise ResolutionInvalid("give exactly one of choice or value")
    if choice is not None:
        if not 0 <= choice < len(conflict.candidates):
            raise ResolutionInvalid(f"choice {choice} is not a candidate")
        chosen = conflict.candidates[choice].value
    else:
        chosen = value
    draft = _Draft(state)
    if conflict.kind == "duplicate_candidate":
        pass
    elif conflict.property is not None:
        name = conflict.property
        if state.prop_versions.get(name, 0) != conflict.seen_version:
            raise ConflictStale(f"{name!r} changed since the conflict was recorded")
        problems = _validate_value(listdef, name, chosen, "value")
        if problems:
            raise ResolutionInvalid(problems[0].message)
        if name not in state.properties or not _same_value(
            listdef.properties[name], state.properties[name], chosen
        ):
            draft.write(name, chosen, ctx)
    else:
        if state.version != conflict.seen_version:
            raise ConflictStale("the entity changed since the conflict was recorded")
        _apply_entity_choice(draft, listdef, chosen, ctx)
    resolved = msgspec.structs.replace(conflict, status="resolved", chosen=chosen)
    return ResolveOutcome(state=draft.finish(), changed=draft.changed, resolved=resolved)


def _apply_entity_choice(
    draft: _Draft, listdef: EntityListDef, chosen: Any, ctx: WriteContext
) -> None:
    """Apply `{"deleted": bool, "properties": {...}}` from a delete/update conflict."""
    if not isinstance(chosen, dict) or not isinstance(chosen.get("deleted"), bool):
        raise ResolutionInvalid('expected {"deleted": bool, "properties": {...}}')
    properties = chosen.get("properties") or {}
    if not isinstance(properties, dict):
        raise ResolutionInvalid("properties must be an object")
    for name, new in properties.items():
        problems = _validate_value(listdef, name, new, f"value.properties.{name}")
        if problems:
            raise ResolutionInvalid(problems[0].message)
    if chosen["deleted"] != draft.deleted:
        draft.deleted = chosen["deleted"]
        draft.stamp(DELETED_KEY, ctx)
    for name in sorted(properties):
        current = draft.base.properties
        pdef = listdef.properties[name]
        if name not in current or not _same_value(pdef, current[name], properties[name]):
            draft.write(name, properties[name], ctx)
