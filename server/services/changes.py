"""The change log: which records changed, in an order a cursor can follow without gaps.

The log is compacted: one row per record, moved to a new position each time the record changes, so
a pull from position 0 is a snapshot and a pull from a cursor costs the changes since it.

Gap safety (PROTOCOL.md "Pull"): positions are taken at the very end of the writing transaction
by updating one counter row, whose row lock is held until commit; so positions are handed out in
commit order: once position N is visible, every smaller position is committed (or aborted), and a
reader that saw N never sees a smaller one appear later. SQLite's single writer gives this for
free. (This is the protocol's "lock just before inserting the change rows", with the counter row
as the lock; it also keeps positions monotonic on SQLite, where a deleted top rowid is reused.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.db.bulk import insert_rows, upsert_clause
from server.db.engine import fetch
from server.db.tables_sync import ChangeLog

CHANGE_COLUMNS = (
    "position",
    "record_key",
    "kind",
    "record_id",
    "list",
    "ward_code",
    "committed_at",
)


@dataclass(frozen=True)
class ChangeRef:
    kind: str  # entity | conflict | form | evict (record_id "<entity_id>@<ward it left>")
    record_id: str
    list: str = ""
    ward_code: str = ""

    @property
    def record_key(self) -> str:
        return f"{self.kind}:{self.record_id}"


async def record(refs: Iterable[ChangeRef], *, commit_order: bool = True) -> dict[str, int]:
    """Move the records' rows to fresh positions; call it last in the writing transaction.

    The positions come from the counter row, whose row lock is held until commit, so they are
    handed out in commit order. `commit_order=False` takes them from a plain sequence instead
    (PostgreSQL only): the naive auto-increment cursor the gap test proves wrong."""
    # A record changed twice in one transaction takes the place of its last change (an entity
    # moved to a ward and back comes after the eviction from that ward, not before it).
    unique: dict[str, ChangeRef] = {}
    for ref in refs:
        unique.pop(ref.record_key, None)
        unique[ref.record_key] = ref
    if not unique:
        return {}
    keys = list(unique)
    if commit_order:
        rows = await fetch(
            "UPDATE change_counter SET value = value + {} WHERE name = 'log' RETURNING value",
            len(keys),
        )
        last = int(rows[0]["value"])
        positions = dict(zip(keys, range(last - len(keys) + 1, last + 1), strict=True))
    else:
        rows = await fetch(
            "SELECT nextval('change_log_id_seq') AS position FROM generate_series(1, {})", len(keys)
        )
        positions = dict(zip(keys, (int(r["position"]) for r in rows), strict=True))
    # One row per record: an upsert on record_key moves it to its new position (the unique
    # index is the arbiter, so this never depends on the planner's statistics).
    now = datetime.now(UTC)
    await insert_rows(
        ChangeLog,
        CHANGE_COLUMNS,
        [
            (positions[key], key, ref.kind, ref.record_id, ref.list, ref.ward_code, now)
            for key, ref in unique.items()
        ],
        on_conflict=upsert_clause("record_key", CHANGE_COLUMNS),
    )
    return positions


async def record_form(form_id: str) -> None:
    await record([ChangeRef(kind="form", record_id=form_id)])


# Up to this many wards, pull reads each ward's slice of the (ward_code, position) index and merges
# them: the cost follows the changes in scope, not the changes in the whole city.
PER_WARD_READ_LIMIT = 20


async def read(
    after: int,
    *,
    wards: Sequence[str] | None,
    lists: Sequence[str],
    include_conflicts: bool,
    limit: int,
    through: int | None = None,
) -> list[dict[str, Any]]:
    """Rows after `after` (up to `through`) in the caller's scope (wards None = city-wide), oldest
    first. Form rows have ward_code '' and list '', so they are read as one more "ward"."""
    kinds = ["form", "entity", "evict"] + (["conflict"] if include_conflicts else [])
    lists_and_forms = [*lists, ""]

    def query() -> Any:
        q = ChangeLog.select(
            ChangeLog.position,
            ChangeLog.kind,
            ChangeLog.record_id,
            ChangeLog.list,
            ChangeLog.ward_code,
        ).where(
            ChangeLog.position > after,
            ChangeLog.kind.is_in(kinds),
            ChangeLog.list.is_in(lists_and_forms),
        )
        if through is not None:
            q = q.where(ChangeLog.position <= through)
        return q.order_by(ChangeLog.position).limit(limit)

    if wards is None:
        return await query()
    scope = [*wards, ""]
    if len(scope) > PER_WARD_READ_LIMIT:
        return await query().where(ChangeLog.ward_code.is_in(scope))
    rows: list[dict[str, Any]] = []
    for ward in scope:
        rows.extend(await query().where(ChangeLog.ward_code == ward))
    return sorted(rows, key=lambda r: r["position"])[:limit]


async def head() -> int:
    row = (
        await ChangeLog.select(ChangeLog.position)
        .order_by(ChangeLog.position, ascending=False)
        .first()
    )
    return int(row["position"]) if row else 0
