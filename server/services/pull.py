"""Pull (PROTOCOL.md "Pull"): state-based, scoped, gap-safe pages of the change log.

The cursor carries the change-log position the device has seen and the scope (wards, lists) it
was served under. When the user's assignment changes, records of removed wards or lists come as
`evict`, and added ones are back-filled by a paged snapshot of the log up to the cursor's position
before the normal stream continues under the new scope.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.sync import (
    Change,
    ConflictChangeOut,
    EntityChangeOut,
    FormChangeOut,
    PullRequest,
    PullResponse,
)
from server.auth import Principal
from server.db.json_columns import from_json
from server.db.tables_forms import Form, FormVersion
from server.db.tables_sync import ChangeLog, ConflictRow, Entity, OpLedger, OpStream
from server.errors import BadRequest, Forbidden
from server.services import changes as change_log
from server.services.conflicts import RESOLVER_ROLES, record_of
from server.services.entity_lists import lists_for_role
from server.services.entity_store import state_of
from server.services.push import now_ms, server_hlc
from server.settings import Settings
from sync.cursor import (
    Backfill,
    Cursor,
    CursorInvalid,
    CursorWrongDevice,
    Evicting,
    decode_cursor,
    encode_cursor,
    scope_fingerprint,
)

CITY_WIDE = ("*",)
READ_ALL_FORM_ROLES = {"admin", "supervisor", "viewer"}


async def pull(settings: Settings, principal: Principal, request: PullRequest) -> PullResponse:
    if request.device_id != principal.device_id:
        raise Forbidden("This token belongs to another device.", code="device_mismatch")
    key = settings.secret_key.encode()
    wards = CITY_WIDE if principal.city_wide else tuple(sorted(principal.wards))
    lists = tuple(sorted(await lists_for_role(principal.role)))
    fingerprint = scope_fingerprint(wards, principal.role, lists)
    cursor: Cursor | None = None
    if request.cursor is not None:
        try:
            cursor = decode_cursor(request.cursor, key, principal.device_id)
        except CursorWrongDevice:
            raise BadRequest(
                "This cursor was issued to another device.", code="cursor_device_mismatch"
            ) from None
        except CursorInvalid:
            raise BadRequest(
                "The cursor is not valid; it must be sent back unchanged.", code="cursor_invalid"
            ) from None

    reset = None
    if (
        cursor is not None
        and now_ms() - cursor.issued_at_ms > settings.log_retention_days * 86_400_000
    ):
        cursor, reset = None, "expired"  # the device re-snapshots and keeps its outbox

    changes: list[Change] = []
    backfill: Backfill | None = None
    position = 0
    budget = _Budget(request.max_items, request.max_bytes)
    if cursor is not None:
        position = cursor.position
        backfill = cursor.backfill
        if cursor.scope != fingerprint or cursor.evicting is not None:
            evicting = cursor.evicting
            held = (
                (evicting.wards, evicting.lists)
                if evicting is not None
                else (tuple(cursor.wards), tuple(cursor.lists))
            )
            held = (_common_wards(held[0], wards), tuple(sorted(set(held[1]) & set(lists))))
            after = await _evictions(
                cursor,
                principal,
                wards,
                lists,
                # (re)start when the scope they lead to changed since
                evicting.after if evicting is not None and evicting.target == fingerprint else "",
                budget,
                changes,
            )
            if after is not None:
                # More to evict: the cursor keeps its old scope and position until it is done.
                more = msgspec.structs.replace(
                    cursor,
                    evicting=Evicting(
                        target=fingerprint, after=after, wards=held[0], lists=held[1]
                    ),
                )
                return PullResponse(
                    cursor=encode_cursor(more, key),
                    has_more=True,
                    server_hlc=server_hlc(),
                    acked_through=await _acked_through(principal, 0),
                    reset=reset,
                    changes=changes,
                )
            backfill = _rescoped_backfill(
                msgspec.structs.replace(cursor, wards=held[0], lists=held[1]), wards, lists
            )
    include_conflicts = principal.role in RESOLVER_ROLES
    form_roles = await _form_roles()

    if backfill is not None:
        rows = await change_log.read(
            int(backfill.after or 0),
            wards=None if backfill.wards == CITY_WIDE else backfill.wards,
            lists=backfill.lists,
            include_conflicts=include_conflicts,
            limit=budget.items_left + 1,
            through=backfill.through_position,
        )
        served, done = await _render(rows, principal, form_roles, budget)
        changes.extend(served.changes)
        backfill = (
            None
            if done
            else msgspec.structs.replace(
                backfill, after=str(served.last_position or backfill.after or 0)
            )
        )
    has_more = backfill is not None
    if backfill is None and budget.items_left > 0:
        rows = await change_log.read(
            position,
            wards=None if wards == CITY_WIDE else wards,
            lists=lists,
            include_conflicts=include_conflicts,
            limit=budget.items_left + 1,
        )
        served, done = await _render(rows, principal, form_roles, budget)
        changes.extend(served.changes)
        position = served.last_position or position
        has_more = not done
    elif backfill is None:
        has_more = True

    new_cursor = Cursor(
        device_id=principal.device_id,
        position=position,
        scope=fingerprint,
        issued_at_ms=now_ms(),
        backfill=backfill,
        wards=wards,
        lists=lists,
    )
    return PullResponse(
        cursor=encode_cursor(new_cursor, key),
        has_more=has_more,
        server_hlc=server_hlc(),
        acked_through=await _acked_through(principal, position if backfill is None else 0),
        reset=reset,
        changes=changes,
    )


class _Budget:
    def __init__(self, items: int, size: int) -> None:
        self.items_left, self.bytes_left = items, size

    def fits(self, change: Change, *, first: bool) -> bool:
        size = len(msgspec.json.encode(change))
        if not first and (self.items_left <= 0 or size > self.bytes_left):
            return False
        self.items_left -= 1
        self.bytes_left -= size
        return True


class _Served(msgspec.Struct):
    changes: list[Change]
    last_position: int | None


async def _render(
    rows: list[dict[str, Any]],
    principal: Principal,
    form_roles: dict[str, list[str]],
    budget: _Budget,
) -> tuple[_Served, bool]:
    """Turn log rows into current-state changes within the budget; says whether the log is done."""
    limit = budget.items_left
    page = rows[:limit]
    entities = await _entities([r["record_id"] for r in page if r["kind"] == "entity"])
    conflicts = await _conflicts([r["record_id"] for r in page if r["kind"] == "conflict"])
    forms = await _forms([r["record_id"] for r in page if r["kind"] == "form"])
    still_visible = await _still_visible(
        [r["record_id"].split("@", 1)[0] for r in page if r["kind"] == "evict"], principal
    )
    served: list[Change] = []
    last = None
    for row in page:
        change = _change_for(row, entities, conflicts, forms, principal, form_roles)
        if row["kind"] == "evict" and row["record_id"].split("@", 1)[0] in still_visible:
            change = None  # it moved to another ward the caller also sees: keep it
        if change is not None and not budget.fits(change, first=not served):
            return _Served(served, last), False
        if change is not None:
            served.append(change)
        last = int(row["position"])
    return _Served(served, last), len(rows) <= limit


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
        entity_id = record_id.split("@", 1)[0]
        return EntityChangeOut(list=row["list"], id=entity_id, version=0, evict=True)
    if kind == "form":
        if principal.role in READ_ALL_FORM_ROLES or principal.role in form_roles.get(record_id, []):
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


async def _evictions(
    cursor: Cursor,
    principal: Principal,
    wards: tuple[str, ...],
    lists: tuple[str, ...],
    after: str,
    budget: _Budget,
    out: list[Change],
) -> str | None:
    """Records the device holds that left its scope: drop the local copy (not a delete).

    Three phases, each keyset-paged within the page's budget: "e:" entities now in the part of
    the old scope that left; "l:" entities that moved out of that part since the cursor (their
    `evict` rows in the log, which the device will no longer read there); "c:" for supervisors,
    the conflict records of that part. Returns where to go on from, or None when all are served.
    """
    if after == "" or after.startswith("e:"):
        query = _left_scope(Entity, cursor, wards, lists)
        last = after.removeprefix("e:")
        if query is not None:
            rows = await (
                query.where(Entity.entity_id > last)
                .order_by(Entity.entity_id)
                .limit(budget.items_left + 1)
            )
            for row in rows:
                change = EntityChangeOut(
                    list=row["list"], id=row["record_id"], version=0, evict=True
                )
                if not budget.fits(change, first=not out):
                    return f"e:{last}"
                out.append(change)
                last = row["record_id"]
        after = "l:"
    if after.startswith("l:"):
        last_position = int(after.removeprefix("l:") or cursor.position)
        # Rows of records still visible serve nothing: a full batch of them is not the end.
        while (query := _left_scope(ChangeLog, cursor, wards, lists)) is not None:
            limit = budget.items_left + 1
            rows = await (
                query.where(
                    ChangeLog.kind == "evict",
                    ChangeLog.position > max(last_position, cursor.position),
                )
                .order_by(ChangeLog.position)
                .limit(limit)
            )
            ids = [r["record_id"].split("@", 1)[0] for r in rows]
            visible = await _still_visible(ids, principal)
            for row, entity_id in zip(rows, ids, strict=True):
                if entity_id not in visible or row["list"] not in lists:
                    change = EntityChangeOut(list=row["list"], id=entity_id, version=0, evict=True)
                    if not budget.fits(change, first=not out):
                        return f"l:{last_position}"
                    out.append(change)
                last_position = int(row["position"])
            if len(rows) < limit:
                break
        after = "c:"
    if principal.role in RESOLVER_ROLES:
        query = _left_scope_conflicts(cursor, wards)
        last = after.removeprefix("c:")
        if query is not None:
            rows = await (
                query.where(ConflictRow.id > last)
                .order_by(ConflictRow.id)
                .limit(budget.items_left + 1)
            )
            for row in rows:
                conflict = ConflictChangeOut(
                    id=row["id"],
                    list=row["list"],
                    entity_id=row["entity_id"],
                    kind=row["kind"],
                    status=row["status"],
                    candidates=[],
                    evict=True,
                )
                if not budget.fits(conflict, first=not out):
                    return f"c:{last}"
                out.append(conflict)
                last = row["id"]
    return None


def _left_scope(
    table: type[Entity] | type[ChangeLog],
    cursor: Cursor,
    wards: tuple[str, ...],
    lists: tuple[str, ...],
) -> Any:
    """Rows of `table` (by its ward_code and list) in the scope the cursor was served under but
    not in the current one; None if nothing left."""
    old_wards, old_lists = tuple(cursor.wards), tuple(cursor.lists)
    removed_lists = [name for name in old_lists if name not in lists]
    removed_wards = [] if wards == CITY_WIDE else [w for w in old_wards if w not in wards]
    ward, list_ = table.ward_code, table.list
    where = None
    if old_wards == CITY_WIDE and wards != CITY_WIDE:
        where = ward.not_in(list(wards) or ["-"])
    elif removed_wards:
        where = ward.is_in(removed_wards)
    if where is not None:
        where = where & list_.is_in(list(old_lists) or ["-"])
    if removed_lists:
        gone = list_.is_in(removed_lists)
        if old_wards != CITY_WIDE:
            gone = gone & ward.is_in(list(old_wards) or ["-"])
        where = gone if where is None else where | gone
    if where is None:
        return None
    if table is Entity:
        return Entity.select(Entity.entity_id.as_alias("record_id"), Entity.list).where(where)
    return ChangeLog.select(ChangeLog.position, ChangeLog.record_id, ChangeLog.list).where(where)


def _common_wards(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    if a == CITY_WIDE:
        return b
    if b == CITY_WIDE:
        return a
    return tuple(sorted(set(a) & set(b)))


def _wardset(wards: tuple[str, ...]) -> set[str] | None:
    return None if wards == CITY_WIDE else set(wards)


def _rescoped_backfill(
    cursor: Cursor, wards: tuple[str, ...], lists: tuple[str, ...]
) -> Backfill | None:
    """What the device must still be back-filled with after a scope change: the new part of its
    scope, plus what an unfinished back-fill still owed, narrowed to the current scope (a ward
    taken away during its back-fill is not back-filled further). The range restarts at 0 and
    runs to the cursor's position; re-sent records are harmless (state-based)."""
    old, new = _wardset(tuple(cursor.wards)), _wardset(wards)
    added_lists = set(lists) - set(cursor.lists)
    if added_lists or (old is not None and new is None):
        need: set[str] | None = new  # new lists (or the whole city): every ward of the scope
    else:
        need = set() if new is None else new - (old or set())
        pending = cursor.backfill
        if pending is not None:
            owed = _wardset(tuple(pending.wards))
            owed = new if owed is None else (owed if new is None else owed & new)
            need = None if owed is None else need | owed
    if need is not None and not need:
        return None
    return Backfill(
        wards=CITY_WIDE if need is None else tuple(sorted(need)),
        lists=lists,
        through_position=cursor.position,
        after=None,
    )


async def _still_visible(entity_ids: list[str], principal: Principal) -> set[str]:
    if not entity_ids:
        return set()
    rows = await Entity.select(Entity.entity_id, Entity.ward_code).where(
        Entity.entity_id.is_in(entity_ids)
    )
    return {r["entity_id"] for r in rows if principal.may_see_ward(r["ward_code"])}


def _left_scope_conflicts(cursor: Cursor, wards: tuple[str, ...]) -> Any:
    """A supervisor's conflict records of wards taken away leave the device, without values."""
    old, new = _wardset(tuple(cursor.wards)), _wardset(wards)
    if new is None:
        return None
    query = ConflictRow.select(
        ConflictRow.id,
        ConflictRow.list,
        ConflictRow.entity_id,
        ConflictRow.kind,
        ConflictRow.status,
    )
    if old is None:
        return query.where(ConflictRow.ward_code.not_in(sorted(new) or ["-"]))
    removed = sorted(old - new)
    if not removed:
        return None
    return query.where(ConflictRow.ward_code.is_in(removed))


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
