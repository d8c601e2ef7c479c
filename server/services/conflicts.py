"""Conflict records: stored by the merge, listed and resolved by supervisors (HTTP or a push op)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from schemas.errors import ErrorCode
from schemas.sync import ConflictCandidate, ConflictRecord, Resolve
from server.auth import Principal
from server.db.engine import locking, transaction
from server.db.json_columns import from_json, to_json
from server.db.tables_sync import ConflictRow
from server.errors import BadRequest, Conflict, NotFound
from server.permissions import require
from server.services import changes as change_log
from server.services.changes import ChangeRef
from server.services.entity_lists import get_list
from server.services.entity_store import load, state_of, store, ward_of
from sync.merge import (
    ConflictStale,
    NewConflict,
    ResolutionInvalid,
    WriteContext,
    resolve_conflict,
)


def record_of(row: dict[str, Any]) -> ConflictRecord:
    return ConflictRecord(
        id=row["id"],
        list=row["list"],
        entity_id=row["entity_id"],
        property=row["property"],
        kind=row["kind"],
        status=row["status"],
        base=from_json(row["base"]),
        candidates=from_json(row["candidates"], list[ConflictCandidate]),
        chosen=from_json(row["chosen"]),
        resolved_by=row["resolved_by"],
        resolved_at=row["resolved_at"],
        version=row["version"],
    )


async def list_conflicts(
    principal: Principal,
    *,
    status: str | None,
    list_name: str | None,
    ward: str | None,
    limit: int = 200,
) -> list[ConflictRecord]:
    require(principal, "conflict.resolve")
    query = ConflictRow.select()
    if status:
        query = query.where(ConflictRow.status == status)
    if list_name:
        query = query.where(ConflictRow.list == list_name)
    wards = principal.listed_wards(ward)
    if wards is not None:
        if not wards:
            return []
        query = query.where(ConflictRow.ward_code.is_in(wards))
    rows = await query.order_by(ConflictRow.created_at).limit(limit)
    return [record_of(r) for r in rows]


async def resolve_via_api(principal: Principal, request: Resolve, *, hlc: str) -> ConflictRecord:
    refs: list[ChangeRef] = []
    async with transaction():
        record, _ = await resolve(principal, request, hlc=hlc, op_seq=0, refs=refs)
        await change_log.record(refs)
    return record


async def resolve(
    principal: Principal, request: Resolve, *, hlc: str, op_seq: int, refs: list[ChangeRef]
) -> tuple[ConflictRecord, int]:
    """Write the chosen value as a new entity version; idempotent on resolution_id; 409 `stale`
    when the entity moved on. Runs inside the caller's transaction. Returns the conflict record
    and the entity's version after the resolution (its current one for a repeated resolution)."""
    require(principal, "conflict.resolve")
    query = ConflictRow.select().where(ConflictRow.id == request.conflict_id)
    row = await locking(query).first()
    if row is None or not principal.may_see_ward(row["ward_code"]):
        raise NotFound("No such conflict.", code=ErrorCode.CONFLICT_NOT_FOUND)
    if row["resolution_id"] == request.resolution_id:
        # The same resolution again: already done.
        current = await load(row["entity_id"])
        return record_of(row), current["version"] if current else 0
    if row["status"] in ("resolved", "superseded"):
        raise Conflict("This conflict was already resolved.", code=ErrorCode.STALE)
    listdef = await get_list(row["list"])
    entity = await load(row["entity_id"], lock=True)
    if listdef is None or entity is None:
        raise NotFound("The entity of this conflict is gone.", code=ErrorCode.CONFLICT_NOT_FOUND)
    state = state_of(entity)
    conflict = NewConflict(
        kind=row["kind"],
        status=row["status"],
        property=row["property"],
        candidates=tuple(from_json(row["candidates"], list[ConflictCandidate])),
        seen_version=row["seen_version"],
        base=from_json(row["base"]),
        chosen=from_json(row["chosen"]),
    )
    ctx = WriteContext(
        device_id=principal.device_id, user_id=principal.user_id, op_seq=op_seq, hlc=hlc
    )
    choice = {"choice": request.choice} if request.choice is not None else {"value": request.value}
    try:
        outcome = resolve_conflict(state, conflict, listdef, ctx, **choice)
    except ConflictStale as error:
        raise Conflict(
            f"The entity moved on since this conflict: {error}", code=ErrorCode.STALE
        ) from None
    except ResolutionInvalid as error:
        raise BadRequest(str(error), code=ErrorCode.RESOLUTION_INVALID) from None
    resolved_state = outcome.state
    if not outcome.changed:
        # The value stays, but the entity is no longer conflicted: devices must get a newer version.
        resolved_state = msgspec.structs.replace(resolved_state, version=resolved_state.version + 1)
    ward = ward_of(resolved_state, listdef, entity["ward_code"])
    await store(resolved_state, listdef, ward_code=ward, exists=True)
    refs.append(
        ChangeRef(kind="entity", record_id=state.entity_id, list=state.list, ward_code=ward)
    )
    now = datetime.now(UTC)
    await ConflictRow.update(
        {
            ConflictRow.status: "resolved",
            ConflictRow.chosen: to_json(outcome.resolved.chosen),
            ConflictRow.resolved_by: principal.user_id,
            ConflictRow.resolved_at: now,
            ConflictRow.resolution_id: request.resolution_id,
            ConflictRow.version: row["version"] + 1,
        }
    ).where(ConflictRow.id == row["id"])
    refs.append(
        ChangeRef(
            kind="conflict", record_id=row["id"], list=row["list"], ward_code=row["ward_code"]
        )
    )
    updated = await ConflictRow.select().where(ConflictRow.id == row["id"]).first()
    assert updated is not None
    return record_of(updated), resolved_state.version
