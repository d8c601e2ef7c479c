"""Pull (PROTOCOL.md "Pull"): state-based, scoped, gap-safe pages of the change log.

The cursor carries the change-log position the device has seen and the scope (wards, lists) it
was served under. When the user's assignment changes, records of removed wards or lists come as
`evict`, and added ones are back-filled by a paged snapshot of the log up to the cursor's position
before the normal stream continues under the new scope. Which wards and lists those are is
`sync.scope`'s algebra; this module turns its answers into queries and pages.
"""

from __future__ import annotations

from typing import Any

import msgspec
from piccolo.columns import Column
from piccolo.columns.combination import Combinable

from schemas.errors import ErrorCode
from schemas.sync import (
    Change,
    ConflictChangeOut,
    EntityChangeOut,
    FormChangeOut,
    PullRequest,
    PullResponse,
    ResetReason,
)
from server.auth import Principal
from server.db.json_columns import from_json
from server.db.tables_forms import Form, FormVersion
from server.db.tables_sync import ChangeLog, ConflictRow, Entity, OpLedger, OpStream
from server.errors import BadRequest, Forbidden
from server.permissions import FormScope, can
from server.services import changes as change_log
from server.services.conflicts import record_of
from server.services.entity_lists import lists_for_role
from server.services.entity_store import state_of
from server.services.push import now_ms, server_hlc
from server.settings import Settings
from sync.cursor import (
    Backfill,
    Cursor,
    CursorInvalid,
    CursorWrongDevice,
    EvictConflicts,
    EvictHeld,
    Evicting,
    EvictionPhase,
    EvictMovedOut,
    decode_cursor,
    encode_cursor,
    scope_fingerprint,
)
from sync.scope import (
    EVERY_WARD,
    Region,
    Scope,
    WardFilter,
    backfill_wards,
    left_scope,
    narrowed,
    ward_set,
    wards_lost,
)


async def pull(settings: Settings, principal: Principal, request: PullRequest) -> PullResponse:
    if request.device_id != principal.device_id:
        raise Forbidden("This token belongs to another device.", code=ErrorCode.DEVICE_MISMATCH)
    lists = tuple(sorted(await lists_for_role(principal.role)))
    scope = Scope(ward_set(principal.wards), lists)
    fingerprint = scope_fingerprint(scope.wards, principal.role, scope.lists)
    cursor, reset = _opened(settings, principal, request.cursor)
    page = _Page(request.max_items, request.max_bytes)
    if cursor is not None and (cursor.scope != fingerprint or cursor.evicting is not None):
        cursor = await _rescoped(cursor, principal, scope, fingerprint, page)
        if cursor.evicting is not None:
            # More to evict: the cursor keeps its old scope and position until it is done.
            return await _response(settings, principal, cursor, page, reset, has_more=True)
    position, backfill, has_more = await _serve_log(principal, cursor, scope, page)
    issued = Cursor(
        device_id=principal.device_id,
        position=position,
        scope=fingerprint,
        issued_at_ms=now_ms(),
        backfill=backfill,
        wards=scope.wards,
        lists=scope.lists,
    )
    return await _response(settings, principal, issued, page, reset, has_more=has_more)


def _opened(
    settings: Settings, principal: Principal, token: str | None
) -> tuple[Cursor | None, ResetReason | None]:
    """The request's cursor; None to start from a snapshot, with a reset if the device had one."""
    if token is None:
        return None, None
    try:
        cursor = decode_cursor(token, settings.secret_key.encode(), principal.device_id)
    except CursorWrongDevice:
        raise BadRequest(
            "This cursor was issued to another device.", code=ErrorCode.CURSOR_DEVICE_MISMATCH
        ) from None
    except CursorInvalid:
        raise BadRequest(
            "The cursor is not valid; it must be sent back unchanged.",
            code=ErrorCode.CURSOR_INVALID,
        ) from None
    if now_ms() - cursor.issued_at_ms > settings.log_retention_days * 86_400_000:
        return None, "expired"  # the device re-snapshots and keeps its outbox
    return cursor, None


async def _response(
    settings: Settings,
    principal: Principal,
    cursor: Cursor,
    page: _Page,
    reset: ResetReason | None,
    *,
    has_more: bool,
) -> PullResponse:
    caught_up = cursor.backfill is None and cursor.evicting is None
    return PullResponse(
        cursor=encode_cursor(cursor, settings.secret_key.encode()),
        has_more=has_more,
        server_hlc=server_hlc(),
        acked_through=await _acked_through(principal, cursor.position if caught_up else 0),
        reset=reset,
        changes=page.changes,
    )


class _Page:
    """The changes of the response being built, within the request's max_items and max_bytes."""

    def __init__(self, items: int, size: int) -> None:
        self.changes: list[Change] = []
        self.items_left, self.bytes_left = items, size

    def add(self, change: Change) -> bool:
        """Adds the change if it fits (the page's first one always does); False if it is full."""
        size = len(msgspec.json.encode(change))
        if self.changes and (self.items_left <= 0 or size > self.bytes_left):
            return False
        self.items_left -= 1
        self.bytes_left -= size
        self.changes.append(change)
        return True


async def _rescoped(
    cursor: Cursor, principal: Principal, scope: Scope, fingerprint: str, page: _Page
) -> Cursor:
    """Evict what left the scope the cursor was served under; once that is done, owe the device
    a back-fill of what the current scope adds. Returns the cursor still evicting (the next page
    goes on from its phase), or one that is done with evictions."""
    evicting = cursor.evicting
    was_held = cursor if evicting is None else evicting
    held = narrowed(Scope(was_held.wards, was_held.lists), scope)
    # Go on from the phase reached, unless the scope they lead to changed since: then restart.
    start: EvictionPhase = EvictHeld()
    if evicting is not None and evicting.target == fingerprint:
        start = evicting.phase
    phase = await _evict(start, cursor, principal, scope, page)
    if phase is not None:
        evicting = Evicting(target=fingerprint, phase=phase, wards=held.wards, lists=held.lists)
        return msgspec.structs.replace(cursor, evicting=evicting)
    owed = None if cursor.backfill is None else cursor.backfill.wards
    wards = backfill_wards(held, owed, scope)
    backfill = Backfill(wards, scope.lists, through_position=cursor.position) if wards else None
    return msgspec.structs.replace(cursor, backfill=backfill, evicting=None)


async def _serve_log(
    principal: Principal, cursor: Cursor | None, scope: Scope, page: _Page
) -> tuple[int, Backfill | None, bool]:
    """Fill the page from the log: what a back-fill still owes, then the changes since the
    cursor's position. Returns the new position, the back-fill left, and whether more is left."""
    position = 0 if cursor is None else cursor.position
    backfill = None if cursor is None else cursor.backfill
    include_conflicts = can(principal, "conflict.resolve")
    form_roles = await _form_roles()

    async def serve(
        after: int, wards: tuple[str, ...], lists: tuple[str, ...], through: int | None
    ) -> tuple[int | None, bool]:
        rows = await change_log.read(
            after,
            wards=None if wards == EVERY_WARD else wards,
            lists=lists,
            include_conflicts=include_conflicts,
            limit=page.items_left + 1,
            through=through,
        )
        return await _render(rows, principal, form_roles, page)

    if backfill is not None:
        last, done = await serve(
            backfill.after, backfill.wards, backfill.lists, backfill.through_position
        )
        backfill = None if done else msgspec.structs.replace(backfill, after=last or backfill.after)
    if backfill is not None or page.items_left <= 0:
        return position, backfill, True
    last, done = await serve(position, scope.wards, scope.lists, None)
    return last or position, None, not done


async def _render(
    rows: list[dict[str, Any]],
    principal: Principal,
    form_roles: dict[str, list[str]],
    page: _Page,
) -> tuple[int | None, bool]:
    """Turn log rows into current-state changes on the page; returns the last position served
    (None if none) and whether the log is done."""
    limit = page.items_left
    rows_in_page = rows[:limit]
    entities = await _entities([r["record_id"] for r in rows_in_page if r["kind"] == "entity"])
    conflicts = await _conflicts([r["record_id"] for r in rows_in_page if r["kind"] == "conflict"])
    forms = await _forms([r["record_id"] for r in rows_in_page if r["kind"] == "form"])
    evicts = [_evicted_entity(r["record_id"]) for r in rows_in_page if r["kind"] == "evict"]
    still_visible = await _still_visible(evicts, principal)
    last = None
    for row in rows_in_page:
        change = _change_for(row, entities, conflicts, forms, principal, form_roles)
        if row["kind"] == "evict" and _evicted_entity(row["record_id"]) in still_visible:
            change = None  # it moved to another ward the caller also sees: keep it
        if change is not None and not page.add(change):
            return last, False
        last = int(row["position"])
    return last, len(rows) <= limit


def _evicted(list_: str, entity_id: str) -> EntityChangeOut:
    return EntityChangeOut(list=list_, id=entity_id, version=0, evict=True)


def _evicted_entity(evict_record_id: str) -> str:
    """The entity of an evict row ("<entity_id>@<ward it left>", see services/entities.py)."""
    return evict_record_id.split("@", 1)[0]


def _change_for(
    row: dict[str, Any],
    entities: dict[str, EntityChangeOut],
    conflicts: dict[str, ConflictChangeOut],
    forms: dict[str, FormChangeOut],
    principal: Principal,
    form_roles: dict[str, list[str]],
) -> Change | None:
    kind, record_id = row["kind"], row["record_id"]
    if kind == "entity":
        return entities.get(record_id)
    if kind == "conflict":
        return conflicts.get(record_id)
    if kind == "evict":
        return _evicted(row["list"], _evicted_entity(record_id))
    if kind == "form":
        if can(principal, "form.read", FormScope(form_roles.get(record_id, []))):
            return forms.get(record_id)
    return None


async def _entities(ids: list[str]) -> dict[str, EntityChangeOut]:
    if not ids:
        return {}
    rows = await Entity.select().where(Entity.entity_id.is_in(ids))
    open_props: dict[str, list[str]] = {}
    for c in await ConflictRow.select(ConflictRow.entity_id, ConflictRow.property).where(
        ConflictRow.entity_id.is_in(ids), ConflictRow.status == "open"
    ):
        open_props.setdefault(c["entity_id"], []).append(c["property"] or "@entity")
    out = {}
    for row in rows:
        state = state_of(row)
        out[state.entity_id] = EntityChangeOut(
            list=state.list,
            id=state.entity_id,
            version=state.version,
            deleted=state.deleted,
            label=state.label,
            properties=state.properties,
            conflicted=sorted(set(open_props.get(state.entity_id, []))),
        )
    return out


async def _conflicts(ids: list[str]) -> dict[str, ConflictChangeOut]:
    if not ids:
        return {}
    rows = await ConflictRow.select().where(ConflictRow.id.is_in(ids))
    return {r["id"]: ConflictChangeOut(**msgspec.structs.asdict(record_of(r))) for r in rows}


async def _forms(ids: list[str]) -> dict[str, FormChangeOut]:
    if not ids:
        return {}
    forms = await Form.select().where(Form.form_id.is_in(ids), Form.current_version.is_not_null())
    keys = [f"{f['form_id']}@{f['current_version']}" for f in forms]
    hashes = {
        r["key"]: r["hash"]
        for r in await FormVersion.select(FormVersion.key, FormVersion.hash).where(
            FormVersion.key.is_in(keys or ["-"])
        )
    }
    return {
        f["form_id"]: FormChangeOut(
            form_id=f["form_id"], version=f["current_version"], state=f["state"], hash=hashes[key]
        )
        for f, key in zip(forms, keys, strict=True)
        if key in hashes
    }


async def _form_roles() -> dict[str, list[str]]:
    return {
        r["form_id"]: from_json(r["roles"]) for r in await Form.select(Form.form_id, Form.roles)
    }


_Batch = list[tuple[EvictionPhase, Change | None]]  # each row's keyset, and what it evicts


async def _evict(
    phase: EvictionPhase, cursor: Cursor, principal: Principal, scope: Scope, page: _Page
) -> EvictionPhase | None:
    """Records the device holds that left its scope: drop the local copy (not a delete).

    The phases (`sync.cursor.EvictionPhase`) run in turn, each keyset-paged within the page.
    Returns where to go on from, or None when all are served."""
    served = Scope(cursor.wards, cursor.lists)
    left = left_scope(served, scope)
    lost = wards_lost(served.wards, scope.wards) if can(principal, "conflict.resolve") else None
    current: EvictionPhase | None = phase
    while current is not None:
        limit = page.items_left + 1
        match current:
            case EvictHeld(after=after):
                batch = await _held_in(left, after, limit)
            case EvictMovedOut(after=after):
                since = max(after, cursor.position)
                batch = await _moved_out_of(left, since, limit, principal, scope)
            case EvictConflicts(after=after):
                batch = await _conflicts_in(lost, after, limit)
        for reached, change in batch:
            if change is not None and not page.add(change):
                return current
            current = reached
        if len(batch) < limit:  # a full batch may have served nothing: read on
            current = _next_phase(current)
    return None


def _next_phase(phase: EvictionPhase) -> EvictionPhase | None:
    match phase:
        case EvictHeld():
            return EvictMovedOut()
        case EvictMovedOut():
            return EvictConflicts()
        case EvictConflicts():
            return None


async def _held_in(left: tuple[Region, ...], after: str, limit: int) -> _Batch:
    """Entities now in the part of the old scope that left."""
    where = _in_regions(Entity.ward_code, Entity.list, left)
    if where is None:
        return []
    rows = await (
        Entity.select(Entity.entity_id, Entity.list)
        .where(where, Entity.entity_id > after)
        .order_by(Entity.entity_id)
        .limit(limit)
    )
    return [
        (
            EvictHeld(r["entity_id"]),
            _evicted(r["list"], r["entity_id"]),
        )
        for r in rows
    ]


async def _moved_out_of(
    left: tuple[Region, ...], since: int, limit: int, principal: Principal, scope: Scope
) -> _Batch:
    """Entities that moved out of that part since the cursor: its evict rows in the log, which
    the device no longer reads there. One that moved into the current scope stays."""
    where = _in_regions(ChangeLog.ward_code, ChangeLog.list, left)
    if where is None:
        return []
    rows = await (
        ChangeLog.select(ChangeLog.position, ChangeLog.record_id, ChangeLog.list)
        .where(where, ChangeLog.kind == "evict", ChangeLog.position > since)
        .order_by(ChangeLog.position)
        .limit(limit)
    )
    ids = [_evicted_entity(r["record_id"]) for r in rows]
    visible = await _still_visible(ids, principal)
    return [
        (
            EvictMovedOut(int(row["position"])),
            None
            if entity_id in visible and row["list"] in scope.lists
            else _evicted(row["list"], entity_id),
        )
        for row, entity_id in zip(rows, ids, strict=True)
    ]


async def _conflicts_in(lost: WardFilter | None, after: str, limit: int) -> _Batch:
    """A supervisor's conflict records of wards taken away (`lost`, None for anyone else) leave
    the device, without values."""
    if lost is None:
        return []
    conditions: list[Combinable] = [ConflictRow.id > after]
    wards = _in_wards(ConflictRow.ward_code, lost)
    if wards is not None:
        conditions.append(wards)
    rows = await (
        ConflictRow.select(
            ConflictRow.id,
            ConflictRow.list,
            ConflictRow.entity_id,
            ConflictRow.kind,
            ConflictRow.status,
        )
        .where(*conditions)
        .order_by(ConflictRow.id)
        .limit(limit)
    )
    return [
        (
            EvictConflicts(row["id"]),
            ConflictChangeOut(
                id=row["id"],
                list=row["list"],
                entity_id=row["entity_id"],
                kind=row["kind"],
                status=row["status"],
                candidates=[],
                evict=True,
            ),
        )
        for row in rows
    ]


def _in_regions(ward: Column, list_: Column, regions: tuple[Region, ...]) -> Combinable | None:
    """The rows of `regions` (by their ward and list columns); None if there are none."""
    where: Combinable | None = None
    for region in regions:
        clause: Combinable = list_.is_in(list(region.lists))
        wards = _in_wards(ward, region.wards)
        if wards is not None:
            clause = wards & clause
        where = clause if where is None else where | clause
    return where


def _in_wards(column: Column, wards: WardFilter) -> Combinable | None:
    """The rows of `wards`; None if that is every ward."""
    if wards.excluding:
        return column.not_in(list(wards.codes)) if wards.codes else None
    return column.is_in(list(wards.codes))


async def _still_visible(entity_ids: list[str], principal: Principal) -> set[str]:
    if not entity_ids:
        return set()
    rows = await Entity.select(Entity.entity_id, Entity.ward_code).where(
        Entity.entity_id.is_in(entity_ids)
    )
    return {r["entity_id"] for r in rows if principal.may_see_ward(r["ward_code"])}


async def _acked_through(principal: Principal, position: int) -> int:
    """Highest op_seq of the caller's op stream on this device whose effects are all inside the
    state served so far."""
    state = (
        await OpStream.select(OpStream.last_op_seq)
        .where(OpStream.key == principal.op_stream)
        .first()
    )
    last = int(state["last_op_seq"]) if state else 0
    pending = (
        await OpLedger.select(OpLedger.op_seq)
        .where(
            OpLedger.device_id == principal.device_id,
            OpLedger.user_id == principal.user_id,
            OpLedger.max_position > position,
        )
        .order_by(OpLedger.op_seq)
        .first()
    )
    return int(pending["op_seq"]) - 1 if pending else last
