"""Reading and writing entity rows: the one place that maps EntityState to the `entity` table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from server.db.engine import current_engine
from server.db.json_columns import from_json, to_json
from server.db.tables_sync import Entity
from sync.merge import EntityListDef, EntityState, natural_key


def state_of(row: dict[str, Any]) -> EntityState:
    return from_json(row["state"], EntityState)  # type: ignore[no-any-return]


async def load(entity_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = Entity.select().where(Entity.entity_id == entity_id)
    if lock and current_engine().engine_type == "postgres":
        query = query.lock_rows()
    return await query.first()


def ward_of(state: EntityState, listdef: EntityListDef, fallback: str) -> str:
    value = state.properties.get(listdef.scope_property)
    return value if isinstance(value, str) and value else fallback


async def store(
    state: EntityState, listdef: EntityListDef, *, ward_code: str, exists: bool
) -> None:
    values = {
        Entity.list: state.list,
        Entity.ward_code: ward_code,
        Entity.version: state.version,
        Entity.deleted: state.deleted,
        Entity.natural_key: natural_key(state.properties, listdef),
        Entity.state: to_json(state),
        Entity.updated_at: datetime.now(UTC),
    }
    if exists:
        await Entity.update(values).where(Entity.entity_id == state.entity_id)
    else:
        await Entity.insert(
            Entity(entity_id=state.entity_id, **{col._meta.name: v for col, v in values.items()})
        )
