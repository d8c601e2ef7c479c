"""The device's local store: SQLite (a file, or ":memory:"). It only keeps rows; when and what to
write is the client's business (`device/client.py`).

- `entities`: the last server copy of each record in scope (`version`, `deleted`, `label`,
  `properties`) plus the device's pending local overlay (`local`, the edits not yet confirmed by
  the server, and `local_op_seq`, the last outbox op carrying them). Reads show copy + overlay.
- `outbox`: every op the device wrote, by user and `op_seq`, with its state and the server's
  result. Rows are never deleted: an op is the only copy of what someone captured.
- `meta`: device id, per user the next op_seq and the op_seq the server has confirmed, cursor,
  HLC, clock offset, tokens.
- `conflicts` and `forms`: what supervisors and form lists need.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from schemas.sync import ConflictRecord, EntityChangeOut, FormChangeOut, Op, OpResult, encode

SELECT_ENTITIES = (
    "SELECT list, id, version, deleted, label, properties, conflicted, local FROM entities"
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    id TEXT PRIMARY KEY,
    list TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,      -- 0: created here, not yet seen from the server
    deleted INTEGER NOT NULL DEFAULT 0,
    label TEXT,
    properties TEXT NOT NULL DEFAULT '{}',
    conflicted TEXT NOT NULL DEFAULT '[]',
    local TEXT,                               -- pending overlay {properties, label?, deleted?}
    local_op_seq INTEGER,                     -- last outbox op carrying the overlay
    stale INTEGER NOT NULL DEFAULT 0          -- not (yet) confirmed by a re-snapshot
);
CREATE INDEX IF NOT EXISTS entities_by_list ON entities (list);
CREATE TABLE IF NOT EXISTS outbox (
    user_id TEXT NOT NULL,                    -- whose op stream: op_seq counts per user here
    op_seq INTEGER NOT NULL,
    op TEXT NOT NULL,                         -- the Op as JSON, exactly as pushed
    state TEXT NOT NULL DEFAULT 'pending',    -- pending | applied | rejected
    result TEXT,                              -- the server's OpResult as JSON
    PRIMARY KEY (user_id, op_seq)
);
CREATE TABLE IF NOT EXISTS conflicts (id TEXT PRIMARY KEY, version INTEGER, record TEXT);
CREATE TABLE IF NOT EXISTS forms (form_id TEXT PRIMARY KEY, version TEXT, state TEXT, hash TEXT);
"""

StrList = list[str]  # LocalEntity has a field named `list`
OpState = Literal["pending", "applied", "rejected"]


@dataclass(frozen=True)
class LocalEntity:
    """What the device shows: the server copy with the pending local overlay on top."""

    list: str
    id: str
    version: int  # of the server copy (0: never seen from the server)
    deleted: bool
    label: str | None
    properties: dict[str, Any]
    conflicted: StrList
    pending: bool  # carries local edits the server has not confirmed yet


@dataclass(frozen=True)
class OutboxEntry:
    op: Op
    state: OpState
    result: OpResult | None


@dataclass(frozen=True)
class AnsweredOverlay:
    """An entity's pending overlay whose last op the server has answered."""

    entity_id: str
    version: int  # of the server copy
    state: OpState
    result: OpResult


class DeviceStore:
    """The SQLite file of one device; every write happens inside `transaction()`."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One local transaction: everything in it is written, or nothing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------------------------------
    # meta

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_meta(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (key,))

    # ------------------------------------------------------------------------------------------
    # entities: server copies and local overlays

    def entity(self, list_name: str, entity_id: str) -> LocalEntity | None:
        row = self.db.execute(
            SELECT_ENTITIES + " WHERE id = ? AND list = ?",
            (entity_id, list_name),
        ).fetchone()
        return None if row is None else _local_entity(row)

    def entities(self, list_name: str | None = None) -> list[LocalEntity]:
        if list_name is None:
            rows = self.db.execute(SELECT_ENTITIES + " ORDER BY id")
        else:
            rows = self.db.execute(SELECT_ENTITIES + " WHERE list = ? ORDER BY id", (list_name,))
        return [_local_entity(row) for row in rows]

    def copy_version(self, entity_id: str) -> int | None:
        """The version of the server copy held (0: created here), None if none is held."""
        row = self.db.execute("SELECT version FROM entities WHERE id = ?", (entity_id,)).fetchone()
        return None if row is None else int(row[0])

    def put_copy(self, change: EntityChangeOut, *, held: bool) -> None:
        """Store the server copy `change` (replacing the one `held`), confirmed by the snapshot."""
        values = (
            change.list,
            change.version,
            int(change.deleted),
            change.label,
            json.dumps(change.properties),
            json.dumps(change.conflicted),
            change.id,
        )
        if not held:
            self.db.execute(
                "INSERT INTO entities (list, version, deleted, label, properties, conflicted, id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        else:
            self.db.execute(
                "UPDATE entities SET list = ?, version = ?, deleted = ?, label = ?, "
                "properties = ?, conflicted = ?, stale = 0 WHERE id = ?",
                values,
            )

    def confirm_copy(self, entity_id: str) -> None:
        self.db.execute("UPDATE entities SET stale = 0 WHERE id = ?", (entity_id,))

    def drop_entity(self, entity_id: str) -> None:
        self.db.execute("DELETE FROM entities WHERE id = ?", (entity_id,))

    def mark_all_stale(self) -> None:
        self.db.execute("UPDATE entities SET stale = 1")

    def drop_stale_copies(self) -> None:
        """Drop the copies a completed snapshot did not confirm (pending edits stay)."""
        self.db.execute("DELETE FROM entities WHERE stale = 1 AND local IS NULL")
        self.db.execute("UPDATE entities SET stale = 0")

    def drop_unconfirmed_creates(self) -> None:
        """Drop local creates whose overlay is gone but the server never sent a copy."""
        self.db.execute("DELETE FROM entities WHERE version = 0 AND local IS NULL")

    def overlay(self, entity_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT local FROM entities WHERE id = ?", (entity_id,)).fetchone()
        return dict(json.loads(row[0])) if row and row[0] else None

    def set_overlay(
        self, list_name: str, entity_id: str, overlay: dict[str, Any], op_seq: int
    ) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO entities (id, list) VALUES (?, ?)", (entity_id, list_name)
        )
        self.db.execute(
            "UPDATE entities SET local = ?, local_op_seq = ? WHERE id = ?",
            (json.dumps(overlay), op_seq, entity_id),
        )

    def clear_overlay(self, entity_id: str) -> None:
        self.db.execute(
            "UPDATE entities SET local = NULL, local_op_seq = NULL WHERE id = ?", (entity_id,)
        )

    def clear_overlays_through(self, op_seq: int) -> None:
        """Clear the overlays whose last op is `op_seq` or earlier."""
        self.db.execute(
            "UPDATE entities SET local = NULL, local_op_seq = NULL WHERE local_op_seq <= ?",
            (op_seq,),
        )

    def clear_all_overlays(self) -> None:
        """Forget every pending overlay, and the local creates that only they held."""
        self.db.execute("UPDATE entities SET local = NULL, local_op_seq = NULL")
        self.db.execute("DELETE FROM entities WHERE version = 0")

    def answered_overlays(self, user_id: str) -> list[AnsweredOverlay]:
        """Overlays whose last op, in `user_id`'s stream, has the server's result recorded."""
        rows = self.db.execute(
            "SELECT e.id, e.version, o.state, o.result FROM entities e "
            "JOIN outbox o ON o.op_seq = e.local_op_seq AND o.user_id = ? "
            "WHERE o.result IS NOT NULL",
            (user_id,),
        ).fetchall()
        return [
            AnsweredOverlay(entity_id, version, state, msgspec.json.decode(result, type=OpResult))
            for entity_id, version, state, result in rows
        ]

    # ------------------------------------------------------------------------------------------
    # outbox

    def add_op(self, user_id: str, op: Op) -> None:
        self.db.execute(
            "INSERT INTO outbox (user_id, op_seq, op) VALUES (?, ?, ?)",
            (user_id, op.op_seq, encode(op).decode()),
        )

    def ops_after(self, user_id: str, op_seq: int, limit: int = -1) -> list[Op]:
        """`user_id`'s ops after `op_seq`, in order (at most `limit`; -1: all of them)."""
        rows = self.db.execute(
            "SELECT op FROM outbox WHERE user_id = ? AND op_seq > ? ORDER BY op_seq LIMIT ?",
            (user_id, op_seq, limit),
        )
        return [msgspec.json.decode(row[0], type=Op) for row in rows]

    def replace_op(self, user_id: str, op: Op) -> None:
        self.db.execute(
            "UPDATE outbox SET op = ? WHERE user_id = ? AND op_seq = ?",
            (encode(op).decode(), user_id, op.op_seq),
        )

    def record_result(self, user_id: str, result: OpResult, state: OpState) -> None:
        self.db.execute(
            "UPDATE outbox SET state = ?, result = ? WHERE user_id = ? AND op_seq = ?",
            (state, encode(result).decode(), user_id, result.op_seq),
        )

    def outbox(self) -> list[OutboxEntry]:
        rows = self.db.execute("SELECT op, state, result FROM outbox ORDER BY rowid")
        return [
            OutboxEntry(
                op=msgspec.json.decode(op, type=Op),
                state=state,
                result=msgspec.json.decode(result, type=OpResult) if result else None,
            )
            for op, state, result in rows
        ]

    # ------------------------------------------------------------------------------------------
    # conflicts and forms

    def conflict_version(self, conflict_id: str) -> int | None:
        row = self.db.execute(
            "SELECT version FROM conflicts WHERE id = ?", (conflict_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def put_conflict(self, record: ConflictRecord) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO conflicts VALUES (?, ?, ?)",
            (record.id, record.version, encode(record).decode()),
        )

    def drop_conflict(self, conflict_id: str) -> None:
        self.db.execute("DELETE FROM conflicts WHERE id = ?", (conflict_id,))

    def conflicts(self) -> list[ConflictRecord]:
        return [
            msgspec.json.decode(row[0], type=ConflictRecord)
            for row in self.db.execute("SELECT record FROM conflicts ORDER BY id")
        ]

    def put_form(self, change: FormChangeOut) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO forms VALUES (?, ?, ?, ?)",
            (change.form_id, change.version, change.state, change.hash),
        )

    def forms(self) -> dict[str, FormChangeOut]:
        rows = self.db.execute("SELECT form_id, version, state, hash FROM forms")
        return {
            form_id: FormChangeOut(form_id=form_id, version=version, state=state, hash=hash_)
            for form_id, version, state, hash_ in rows
        }


def _local_entity(row: tuple[Any, ...]) -> LocalEntity:
    list_name, entity_id, version, deleted, label, properties, conflicted, local = row
    shown = json.loads(properties)
    is_deleted = bool(deleted)
    if local:
        overlay = json.loads(local)
        shown.update(overlay["properties"])
        label = overlay.get("label", label)
        is_deleted = overlay.get("deleted", is_deleted)
    return LocalEntity(
        list=list_name,
        id=entity_id,
        version=version,
        deleted=is_deleted,
        label=label,
        properties=shown,
        conflicted=json.loads(conflicted),
        pending=bool(local),
    )
