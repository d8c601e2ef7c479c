"""Submissions and their attachment references (issue: sync core). More sync tables join here."""

from __future__ import annotations

from piccolo.columns import JSON, BigInt, BigSerial, Boolean, Integer, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Submission(Table, tablename="submission"):
    """An immutable submission event; edits are new instances naming the one they deprecate."""

    id = Varchar(length=36, primary_key=True)  # uuid5(device_id, op_seq) of the op that carried it
    # Unique among accepted submissions (enforced by push); a rejected reuse is kept beside it.
    instance_id = Varchar(length=64, index=True)
    form_id = Varchar(length=64, index=True)
    form_version = Varchar(length=64)
    status = Varchar(length=10)  # accepted | rejected (rejected data is kept, never dropped)
    ward_code = Varchar(length=5, index=True)
    user_id = Varchar(length=36, index=True)
    device_id = Varchar(length=36, index=True)
    op_seq = BigInt(default=0)
    hlc = Varchar(length=80)
    captured_at = Timestamptz()
    received_at = Timestamptz(default=TimestamptzNow())
    deprecated_id = Varchar(length=64, null=True, default=None, index=True)
    content_hash = Varchar(length=64)
    data = JSON()
    errors = JSON(default=[])
    # Rules push accepted without deciding (schemas.sync.SubmissionFlag); never a reason to reject.
    flags = JSON(default=[])
    # OpenRosa (ODK Collect): the blob holding the instance XML as received; null for a push.
    xml_sha256 = Varchar(length=64, null=True, default=None)
    # What came with an OpenRosa submission: deviceID, User-Agent, an encrypted form's key.
    envelope = JSON(default={})


class SubmissionAttachment(Table, tablename="submission_attachment"):
    """Which submission references which blob: the ground for blob download authorisation."""

    id = BigSerial(primary_key=True)
    instance_id = Varchar(length=64, index=True)
    # "" while a file an OpenRosa submission names has not arrived (Collect may send it later).
    sha256 = Varchar(length=64, index=True)
    name = Varchar(length=255)
    size = BigInt()
    content_type = Varchar(length=127)
    ward_code = Varchar(length=5, index=True)


class OpStream(Table, tablename="op_stream"):
    """One op stream: the ops one user pushed from one device (PROTOCOL.md op_seq, docs/protocol.md
    "Device binding"). Its row is locked for the length of a push, so a stream's pushes are
    serialised; a shared tablet has one stream per user, so a new holder never replays another's."""

    key = Varchar(length=73, primary_key=True)  # "<device_id>:<user_id>"
    device_id = Varchar(length=36, index=True)
    user_id = Varchar(length=36)
    last_op_seq = BigInt(default=0)
    updated_at = Timestamptz(default=TimestamptzNow())


class OpLedger(Table, tablename="op_ledger"):
    """Every applied op and its stored result, written in the op's own transaction (exactly-once)."""

    id = BigSerial(primary_key=True)
    key = Varchar(length=100, unique=True)  # "<device_id>:<user_id>:<op_seq>"
    device_id = Varchar(length=36, index=True)
    user_id = Varchar(length=36, default="")
    op_seq = BigInt()
    op_id = Varchar(length=36)
    kind = Varchar(length=12)
    status = Varchar(length=10)
    # Highest change-log position this op produced: pull's acked_through compares cursors with it.
    max_position = BigInt(default=0, index=True)
    result = JSON()
    created_at = Timestamptz(default=TimestamptzNow())


class EntityListRow(Table, tablename="entity_list_def"):
    """Declared entity lists: the programme's own (in code) and those forms declare."""

    name = Varchar(length=63, primary_key=True)
    definition = JSON()
    declared_by = Varchar(length=64, default="")  # "programme" or the form_id that declared it


class Entity(Table, tablename="entity"):
    entity_id = Varchar(length=36, primary_key=True)
    list = Varchar(length=63, index=True)
    ward_code = Varchar(length=5, index=True)
    version = Integer(default=1)
    deleted = Boolean(default=False)
    natural_key = Varchar(length=500, null=True, default=None, index=True)
    # EntityState (sync/merge.py), minus the columns above, as one JSON document.
    state = JSON()
    updated_at = Timestamptz(default=TimestamptzNow())


class EntityVersion(Table, tablename="entity_version"):
    """What an entity held at each version it reached: an OpenRosa update names only the version
    it started from (`baseVersion`), and the merge reads the values it saw there (the native
    protocol's `base_properties`). Versions passed through inside one push are not kept."""

    key = Varchar(length=48, primary_key=True)  # "<entity_id>:<version>"
    entity_id = Varchar(length=36)
    version = Integer()
    content = JSON()  # {"label": ..., "properties": {...}}


class ConflictRow(Table, tablename="conflict"):
    id = Varchar(length=36, primary_key=True)
    list = Varchar(length=63, index=True)
    entity_id = Varchar(length=36, index=True)
    ward_code = Varchar(length=5, index=True)
    property = Varchar(length=64, null=True, default=None)
    kind = Varchar(length=24)
    status = Varchar(length=16, index=True)
    seen_version = Integer(default=0)
    version = Integer(default=1)  # bumps on resolution, so pulls carry the newer record
    base = JSON(default="null")
    candidates = JSON(default=[])
    chosen = JSON(default="null")
    resolved_by = Varchar(length=36, null=True, default=None)
    resolved_at = Timestamptz(null=True, default=None)
    resolution_id = Varchar(length=36, null=True, default=None, unique=True)
    created_at = Timestamptz(default=TimestamptzNow())


class ChangeLog(Table, tablename="change_log"):
    """One row per record (the latest change wins its row): positions are handed out in commit order,
    so a cursor never skips a change. Pull reads `position > cursor` within the caller's scope."""

    id = BigSerial(primary_key=True)
    position = BigInt(unique=True)
    record_key = Varchar(
        length=120, unique=True
    )  # "entity:<id>" | "conflict:<id>" | "form:<id>" | "evict:<id>@<ward>"
    kind = Varchar(length=10)
    record_id = Varchar(length=64)
    list = Varchar(length=63, default="")
    ward_code = Varchar(length=5, default="", index=True)
    committed_at = Timestamptz(default=TimestamptzNow())


class ChangeCounter(Table, tablename="change_counter"):
    """The last handed-out change-log position. Updating its row is the last write of a writing
    transaction: the row lock (PostgreSQL) or the single writer (SQLite) orders positions by commit."""

    name = Varchar(length=16, primary_key=True)
    value = BigInt(default=0)


SYNC_TABLES: list[type[Table]] = [
    Submission,
    SubmissionAttachment,
    OpStream,
    OpLedger,
    EntityListRow,
    Entity,
    EntityVersion,
    ConflictRow,
    ChangeLog,
    ChangeCounter,
]
