"""Verified blobs and resumable (tus) uploads (issue: attachments)."""

from __future__ import annotations

from piccolo.columns import JSON, BigInt, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Blob(Table, tablename="blob"):
    """A blob whose size and SHA-256 were verified; only these are ever served."""

    sha256 = Varchar(length=64, primary_key=True)
    size = BigInt()
    content_type = Varchar(length=127)
    first_uploader = Varchar(length=36, null=True, default=None, index=True)  # app_user.id
    created_at = Timestamptz(default=TimestamptzNow())


class Upload(Table, tablename="upload"):
    """One tus upload. `received` bytes are durably staged: whole parts plus the tail."""

    id = Varchar(length=32, primary_key=True)
    user_id = Varchar(length=36, index=True)
    sha256 = Varchar(length=64, index=True)
    upload_length = BigInt()
    received = BigInt(default=0)
    filename = Varchar(length=255, default="")
    content_type = Varchar(length=127)
    metadata = JSON(default={})
    state = Varchar(length=12, index=True)  # active | done | failed | expired
    failure = Varchar(length=40, default="")  # the problem code of a failed upload
    sniffed_type = Varchar(length=127, null=True, default=None)  # from the first part's bytes
    staging = Varchar(length=1024, default="")  # the blob store's staging handle
    parts = JSON(default=[])  # [[number, size, etag], ...] committed parts, in order
    tail_size = BigInt(default=0)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz(index=True)


class BlobHolder(Table, tablename="blob_holder"):
    """A user who has shown they hold a blob's bytes: they sent them (a verified upload), or they
    could read the blob when their submission referenced it. A submission's reference grants its
    ward read access only if its pusher is a holder, so knowing a hash grants nothing."""

    key = Varchar(length=101, primary_key=True)  # "<sha256>:<user_id>"
    sha256 = Varchar(length=64, index=True)
    user_id = Varchar(length=36)
    created_at = Timestamptz(default=TimestamptzNow())


BLOB_TABLES: list[type[Table]] = [Blob, Upload, BlobHolder]
