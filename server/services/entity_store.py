"""Reading and writing entity rows: the one place that maps EntityState to the `entity` table.

A push works on an `EntityBatch`: every entity its ops name is read (and on PostgreSQL locked, in
entity_id order so two pushes never deadlock) in one query, the ops merge against the copies in
memory, and the changed rows are written back in one statement per kind before the push commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.db.bulk import insert_rows, placeholders, upsert_clause
from server.db.engine import current_engine, fetch, locking
from server.db.json_columns import from_json, to_json
from server.db.tables_sync import ConflictRow, Entity, EntityVersion
from sync.merge import EntityListDef, EntityState, NewConflict, natural_key

ENTITY_COLUMNS = (
    "entity_id",
    "list",
    "ward_code",
    "version",
    "deleted",
    "natural_key",
    "state",
    "updated_at",
)
VERSION_COLUMNS = ("key", "entity_id", "version", "content")
CONFLICT_COLUMNS = (
    "id",
    "list",
    "entity_id",
    "ward_code",
    "property",
    "kind",
    "status",
    "seen_version",
    "version",
    "base",
    "candidates",
    "chosen",
    "created_at",
)


def state_of(row: dict[str, Any]) -> EntityState:
    return from_json(row["state"], EntityState)


async def load(entity_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = Entity.select().where(Entity.entity_id == entity_id)
    return await (locking(query) if lock else query).first()


def ward_of(state: EntityState, listdef: EntityListDef, fallback: str) -> str:
    value = state.properties.get(listdef.scope_property)
    return value if isinstance(value, str) and value else fallback


def _row(state: EntityState, listdef: EntityListDef, ward_code: str, now: datetime) -> tuple:
    return (
        state.entity_id,
        state.list,
        ward_code,
        state.version,
        state.deleted,
        natural_key(state.properties, listdef),
        to_json(state),
        now,
    )


def _version_row(state: EntityState) -> tuple:
    content = {"label": state.label, "properties": state.properties}
    return (f"{state.entity_id}:{state.version}", state.entity_id, state.version, to_json(content))


async def _record_versions(states: list[EntityState]) -> None:
    """The first state stored at a version is what that version held (a later write at the same
    version only re-stamps its label register)."""
    await insert_rows(
        EntityVersion,
        VERSION_COLUMNS,
        [_version_row(state) for state in states],
        on_conflict="ON CONFLICT (key) DO NOTHING",
    )


async def version_content(entity_id: str, version: int) -> dict[str, Any] | None:
    """{"label", "properties"} of an entity at `version`, if the server kept it."""
    row = await (
        EntityVersion.select(EntityVersion.content)
        .where(EntityVersion.key == f"{entity_id}:{version}")
        .first()
    )
    return from_json(row["content"]) if row is not None else None


async def store(
    state: EntityState, listdef: EntityListDef, *, ward_code: str, exists: bool
) -> None:
    """Write one entity (conflict resolution); pushes write through an EntityBatch."""
    await insert_rows(
        Entity,
        ENTITY_COLUMNS,
        [_row(state, listdef, ward_code, datetime.now(UTC))],
        on_conflict=upsert_clause("entity_id", ENTITY_COLUMNS) if exists else "",
    )
    await _record_versions([state])


@dataclass
class StoredEntity:
    """An entity as the batch knows it: as stored when loaded, and its state now."""

    list: str
    ward_code: str  # its ward now (a change moving it elsewhere evicts it from this one)
    state: EntityState
    existed: bool  # a row was stored before this push (UPDATE), or it is new (INSERT)
    listdef: EntityListDef | None = None
    dirty: bool = False


class EntityBatch:
    """The entities of one push, read up front, merged in memory, written back by `flush`."""

    def __init__(self) -> None:
        self._known: dict[str, StoredEntity | None] = {}
        self._conflicts: list[tuple] = []
        # natural key -> states of live entities found with it (before this push's changes)
        self._by_key: dict[tuple[str, str], dict[str, EntityState]] = {}

    async def load(self, entity_ids: Iterable[str]) -> None:
        """Read (and on PostgreSQL lock, in a fixed order) the entities not read yet."""
        wanted = sorted({e for e in entity_ids if e not in self._known})
        if not wanted:
            return
        lock = " FOR UPDATE" if current_engine().engine_type == "postgres" else ""
        rows = await fetch(
            "SELECT entity_id, list, ward_code, state FROM entity "  # noqa: S608 (only {} in it)
            f"WHERE entity_id IN ({placeholders(len(wanted))}) ORDER BY entity_id{lock}",
            *wanted,
        )
        for entity_id in wanted:
            self._known[entity_id] = None
        for row in rows:
            self._known[row["entity_id"]] = StoredEntity(
                list=row["list"], ward_code=row["ward_code"], state=state_of(row), existed=True
            )

    def get(self, entity_id: str) -> StoredEntity | None:
        return self._known[entity_id]

    async def same_key(self, list_name: str, key: str) -> list[EntityState]:
        """Live entities of a list whose natural key is `key`, this push's changes included."""
        if (list_name, key) not in self._by_key:
            rows = await fetch(
                "SELECT entity_id, state FROM entity "
                "WHERE list = {} AND natural_key = {} AND deleted = {}",
                list_name,
                key,
                False,
            )
            self._by_key[(list_name, key)] = {r["entity_id"]: state_of(r) for r in rows}
        found = dict(self._by_key[(list_name, key)])
        for entity_id, stored in self._known.items():
            if stored is not None and stored.list == list_name:
                found[entity_id] = stored.state  # newer than what the query saw
        return list(found.values())

    def put(self, state: EntityState, listdef: EntityListDef, ward_code: str) -> None:
        stored = self._known.get(state.entity_id)
        if stored is None:
            stored = StoredEntity(list=state.list, ward_code=ward_code, state=state, existed=False)
            self._known[state.entity_id] = stored
        stored.state, stored.listdef, stored.ward_code, stored.dirty = (
            state,
            listdef,
            ward_code,
            True,
        )

    def add_conflicts(
        self, conflict_ids: list[str], state: EntityState, ward_code: str, found: list[NewConflict]
    ) -> None:
        now = datetime.now(UTC)
        for conflict_id, conflict in zip(conflict_ids, found, strict=True):
            self._conflicts.append(
                (
                    conflict_id,
                    state.list,
                    state.entity_id,
                    ward_code,
                    conflict.property,
                    conflict.kind,
                    conflict.status,
                    conflict.seen_version,
                    1,
                    to_json(conflict.base),
                    to_json(list(conflict.candidates)),
                    to_json(conflict.chosen),
                    now,
                )
            )

    def forget(self, entity_id: str) -> None:
        """Drop the copy (after `flush`): someone else (a resolution) writes this entity next."""
        self._known.pop(entity_id, None)
        self._by_key.clear()

    async def flush(self) -> None:
        """Write the changed entities (new ones INSERTed, so a concurrent create of the same id
        fails instead of being overwritten) and the new conflict records."""
        now = datetime.now(UTC)
        new_rows: list[tuple[Any, ...]] = []
        changed_rows: list[tuple[Any, ...]] = []
        written: list[EntityState] = []
        for stored in self._known.values():
            if stored is None or not stored.dirty:
                continue
            assert stored.listdef is not None
            row = _row(stored.state, stored.listdef, stored.ward_code, now)
            (changed_rows if stored.existed else new_rows).append(row)
            written.append(stored.state)
            stored.existed, stored.dirty = True, False
        await insert_rows(Entity, ENTITY_COLUMNS, new_rows)
        await insert_rows(
            Entity,
            ENTITY_COLUMNS,
            changed_rows,
            on_conflict=upsert_clause("entity_id", ENTITY_COLUMNS),
        )
        await _record_versions(written)
        await insert_rows(ConflictRow, CONFLICT_COLUMNS, self._conflicts)
        self._conflicts = []
