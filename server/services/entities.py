"""Entities: merge (sync/merge.py, the one merge engine) a change into a push's EntityBatch, with
scope checks; the batch reads and writes the rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import msgspec

from schemas.common import ErrorItem
from schemas.errors import ErrorCode
from schemas.sync import EntityChange, EntityResult
from server.auth import Principal
from server.services.changes import ChangeRef
from server.services.entity_lists import get_list
from server.services.entity_store import EntityBatch, ward_of
from sync.merge import (
    WriteContext,
    apply_entity_change,
    find_duplicate_candidates,
    natural_key,
)


@dataclass
class ChangeOutcome:
    result: EntityResult
    errors: list[ErrorItem] = field(default_factory=list)


def _forbidden(change: EntityChange, path: str, code: str, message: str) -> ChangeOutcome:
    return ChangeOutcome(
        result=EntityResult(entity_id=change.entity_id, status="rejected", version=0),
        errors=[ErrorItem(path=path, code=code, message=message)],
    )


async def apply_change(
    principal: Principal,
    change: EntityChange,
    *,
    hlc: str,
    op_seq: int,
    submission_ward: str,
    batch: EntityBatch,
    refs: list[ChangeRef],
) -> ChangeOutcome:
    """Merge one change into `batch` (the push loaded its entities up front; this reloads one a
    resolution wrote since)."""
    listdef = await get_list(change.list)
    assert listdef is not None  # push checked the list exists and is writable
    await batch.load([change.entity_id])
    row = batch.get(change.entity_id)
    current = row.state if row else None
    if row is not None:
        if row.list != change.list:
            return _forbidden(
                change,
                "$.list",
                ErrorCode.ENTITY_LIST_MISMATCH,
                "this entity belongs to another list",
            )
        if not principal.may_see_ward(row.ward_code):
            # Do not reveal that an entity exists outside the caller's wards.
            return _forbidden(
                change, "$.entity_id", ErrorCode.WARD_FORBIDDEN, "no such entity in your wards"
            )
    ctx = WriteContext(
        device_id=principal.device_id, user_id=principal.user_id, op_seq=op_seq, hlc=hlc
    )
    if current is None and listdef.scope_property not in change.properties:
        # A create names its ward through the submission when the form does not save it.
        change = msgspec.structs.replace(
            change, properties={**change.properties, listdef.scope_property: submission_ward}
        )
    outcome = apply_entity_change(current, change, listdef, ctx)
    if outcome.status == "rejected" or outcome.state is None:
        return ChangeOutcome(
            result=EntityResult(
                entity_id=change.entity_id,
                status="rejected",
                version=current.version if current else 0,
            ),
            errors=list(outcome.errors),
        )
    state = outcome.state
    ward = ward_of(state, listdef, submission_ward)
    if not principal.may_see_ward(ward):
        return _forbidden(
            change,
            f"$.properties.{listdef.scope_property}",
            ErrorCode.WARD_FORBIDDEN,
            f"ward {ward} is not assigned to you",
        )
    new_conflicts = list(outcome.conflicts)
    if current is None and listdef.natural_key:
        key = natural_key(state.properties, listdef)
        if key is not None:
            same_key = await batch.same_key(change.list, key)
            new_conflicts.extend(find_duplicate_candidates(state, same_key, listdef))
    changed = outcome.changed
    version_before = current.version if current else 0
    if state.version == version_before and any(c.status == "open" for c in new_conflicts):
        # A losing concurrent edit changes no value but opens a conflict: devices must get a
        # newer version to learn that the record is conflicted.
        state = msgspec.structs.replace(state, version=state.version + 1)
        new_conflicts = [
            c if c.property is not None else msgspec.structs.replace(c, seen_version=state.version)
            for c in new_conflicts
        ]
        changed = True
    if changed:
        old_ward = row.ward_code if row is not None else ward
        batch.put(state, listdef, ward)
        if state.version != version_before:
            refs.append(
                ChangeRef(kind="entity", record_id=state.entity_id, list=state.list, ward_code=ward)
            )
        if old_ward != ward:
            # Devices of the old ward must drop their copy: it left their scope.
            refs.append(
                ChangeRef(
                    kind="evict",
                    record_id=f"{state.entity_id}@{old_ward}",
                    list=state.list,
                    ward_code=old_ward,
                )
            )
    conflict_ids = [str(uuid.uuid4()) for _ in new_conflicts]
    batch.add_conflicts(conflict_ids, state, ward, new_conflicts)
    refs.extend(
        ChangeRef(kind="conflict", record_id=conflict_id, list=state.list, ward_code=ward)
        for conflict_id in conflict_ids
    )
    status = outcome.status
    if new_conflicts and status == "applied":
        status = "conflict" if any(c.status == "open" for c in new_conflicts) else "merged"
    return ChangeOutcome(
        result=EntityResult(
            entity_id=state.entity_id,
            status=status,
            version=state.version,
            conflict_ids=conflict_ids,
        ),
        errors=list(outcome.errors),
    )
