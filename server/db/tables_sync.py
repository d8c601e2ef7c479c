"""Submissions and their attachment references (issue: sync core). More sync tables join here."""

from __future__ import annotations

from piccolo.columns import JSON, BigInt, BigSerial, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Submission(Table, tablename="submission"):
    """An immutable submission event; edits are new instances naming the one they deprecate."""

    instance_id = Varchar(length=64, primary_key=True)
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


class SubmissionAttachment(Table, tablename="submission_attachment"):
    """Which submission references which blob: the ground for blob download authorisation."""

    id = BigSerial(primary_key=True)
    instance_id = Varchar(length=64, index=True)
    sha256 = Varchar(length=64, index=True)
    name = Varchar(length=255)
    size = BigInt()
    content_type = Varchar(length=127)
    ward_code = Varchar(length=5, index=True)


SYNC_TABLES: list[type[Table]] = [Submission, SubmissionAttachment]
